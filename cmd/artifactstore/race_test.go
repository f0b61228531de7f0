//go:build race

package main

// raceEnabled: the race detector multiplies a process's memory, so memory
// figures measured under it say nothing about the product.
const raceEnabled = true
