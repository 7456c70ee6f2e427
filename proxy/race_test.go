//go:build race

package proxy

// raceEnabled: under the race detector sync.Pool drops objects on purpose,
// so allocation counts mean nothing; `make test` runs them without -race.
const raceEnabled = true
