//go:build !race

package testutil

// Race is true in a -race build; see race_on.go.
const Race = false
