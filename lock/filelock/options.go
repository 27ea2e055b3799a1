package filelock

import "time"

// Option configures a Locker.
type Option func(*config)

type config struct {
	clock        Clock
	corruptGrace time.Duration
	cleanupAge   time.Duration
	shared       bool
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

// WithSharedGroup lets processes of several users share the lock
// directory through its group: the directory may be owned by another user
// and writable by its group, lock files may be owned by any user, and the
// files (and a directory New creates) are made group-writable: 0660 and
// 0770 with setgid, so new files keep the directory's group. Every member
// of the group can then delete or forge any lock: use it only for a group
// that is trusted as a whole. Default: a private directory, owned by this
// process's user and writable by no one else, with files 0600.
func WithSharedGroup() Option {
	return func(cfg *config) { cfg.shared = true }
}
