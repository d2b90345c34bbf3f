//go:build race

package test

// sfRaceSlowdown scales the probe's bound under the race detector, which
// makes every instruction of the node and the clients several times slower
// (5 to 20× on a loaded 2-core machine). A loop held by one connection
// (25 s before the fix) still fails it.
const sfRaceSlowdown = 20
