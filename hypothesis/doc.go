// Package hypothesis is the Hypothesis Real Time API on the gateway.
package hypothesis
