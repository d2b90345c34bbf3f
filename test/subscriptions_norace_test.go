//go:build !race

package test

// sfRaceSlowdown: see subscriptions_race_test.go.
const sfRaceSlowdown = 1
