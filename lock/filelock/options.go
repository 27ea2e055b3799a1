package filelock

import "time"

// Option configures a Locker.
type Option func(*config)

type config struct {
	clock        Clock
	corruptGrace time.Duration
	cleanupAge   time.Duration
	maxOpen      int
}

func defaultConfig() config {
	return config{corruptGrace: 2 * time.Second, maxOpen: 1024}
}

// WithClock replaces the host's clocks, for tests. Default: the wall clock
// and, on Linux and macOS, the boot clock.
func WithClock(c Clock) Option {
	return func(cfg *config) { cfg.clock = c }
}

// WithCorruptGrace sets how long an empty or unparseable lock file counts
// as held, measured from its last modification, because another process or
// implementation may be writing it. After that it counts as expired.
// Default 2s.
func WithCorruptGrace(d time.Duration) Option {
	return func(cfg *config) { cfg.corruptGrace = d }
}

// WithCleanupAge keeps released and expired records for d before Cleanup
// removes their files, so a key reused within d keeps its file. Default 0:
// Cleanup removes every record that is not live.
func WithCleanupAge(d time.Duration) Option {
	return func(cfg *config) { cfg.cleanupAge = d }
}

// WithMaxOpenFiles bounds how many lock files the Locker keeps open for
// reuse. Default 1024; values under 1 mean 1.
func WithMaxOpenFiles(n int) Option {
	return func(cfg *config) { cfg.maxOpen = max(n, 1) }
}
