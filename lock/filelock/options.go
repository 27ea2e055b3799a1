package filelock

import "time"

// Option configures a Locker.
type Option func(*config)

type config struct {
	clock        Clock
	corruptGrace time.Duration
	cleanupAge   time.Duration
}

func defaultConfig() config {
	return config{corruptGrace: 2 * time.Second}
}

// WithClock replaces the host's clocks, for tests. Default: the wall clock
// and, on Linux and macOS, the boot clock.
func WithClock(c Clock) Option {
	return func(cfg *config) { cfg.clock = c }
}

// WithCorruptGrace sets how long an empty, unparseable or oversized lock
// file counts as held, because another process or implementation may be
// writing it. The grace runs from the file's last change (its ctime, which
// unlike its mtime cannot be set to a future date). After that it counts as
// expired. Default 2s.
func WithCorruptGrace(d time.Duration) Option {
	return func(cfg *config) { cfg.corruptGrace = d }
}

// WithCleanupAge keeps released and expired records for d before Cleanup
// removes their files, so a key reused within d keeps its file. Default 0:
// Cleanup removes every record that is not live.
func WithCleanupAge(d time.Duration) Option {
	return func(cfg *config) { cfg.cleanupAge = d }
}
