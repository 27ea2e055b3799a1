package filelock

import "time"

// Option configures a Locker.
type Option func(*config)

type config struct {
	clock        Clock
	corruptGrace time.Duration
	cleanupAge   time.Duration
	busyWait     time.Duration
	shared       bool
}

func defaultConfig() config {
	return config{corruptGrace: 2 * time.Second, busyWait: time.Second}
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

// WithBusyWait sets how long an operation waits for a flock that another
// process holds on a file before it gives up on that file: Obtain refuses
// the key (a *lock.HeldError whose Reason wraps ErrBusy), Refresh, Release
// and Inspect fail with ErrBusy, Scan and Cleanup skip the file. Flocks are
// held for microseconds; one held longer belongs to a process that was
// stopped or is stuck. Default 1s.
func WithBusyWait(d time.Duration) Option {
	return func(cfg *config) { cfg.busyWait = d }
}

// WithSharedGroup lets processes of several users share the lock
// directory through its group, the effective group of this process (run
// every sharing process with it: systemd's Group=, sg, newgrp). The
// directory must belong to that group, carry the setgid bit (so files made
// in it get the group) and be writable by nobody outside the group; it may
// be owned by another member. Lock files may be owned by any member and
// are made 0660, and a directory New creates 2770. Every member of the
// group can delete or forge any lock: use it only for a group that is
// trusted as a whole. Default: a private directory, owned by this
// process's user and writable by no one else, with files 0600.
func WithSharedGroup() Option {
	return func(cfg *config) { cfg.shared = true }
}
