//go:build !linux && !darwin

package filelock_test

// holdFlock is never asked for where there is no flock.
func holdFlock(string) {}
