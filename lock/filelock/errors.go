package filelock

import "errors"

// ErrNotLockFile is returned, wrapped with the path and what was found
// there, when a key's lock file is something the engine must not read or
// write: a symlink, directory, FIFO or other non-regular file, a file with
// more than one hard link, or, in a private directory, a file owned by
// another user. Scan reports such entries as lock.Skipped
// records and Cleanup leaves them alone; removing them is for a person to
// decide.
var ErrNotLockFile = errors.New("filelock: not a lock file")

// ErrFenceExhausted is returned, wrapped with the key and the file, by an
// Obtain that would have to hand out a fencing token greater than 2^53,
// the largest this engine hands out (every token up to it is exact as a
// JSON number in any language): a lock file holds that token, which this
// engine does not reach by counting in any lifetime. Tokens never wrap
// around: the lock is not taken and nothing is written. A record or floor
// file holding a token above 2^53 is not believed at all: such a record
// counts as corrupt, such a floor as none.
var ErrFenceExhausted = errors.New("filelock: fencing tokens exhausted")

// ErrUnsafeDir is returned by New, wrapped with the directory, what is
// wrong and how to fix it, for a directory in which another user could
// delete, plant or forge lock files: a symlink at its path, one owned by
// another user, or writable by every user, or (unless WithSharedGroup) by
// its group, sticky bit or not; with WithSharedGroup, one that does not
// belong to this process's effective group or lacks the setgid bit.
var ErrUnsafeDir = errors.New("filelock: unsafe lock directory")

// ErrBusy is wrapped by the error of an operation on a file that another
// process has held under its flock for longer than the busy wait (see
// WithBusyWait): a process stopped or stuck in the middle of an operation.
// Obtain returns it as the Reason of a *lock.HeldError, since no holder is
// known; Scan and Cleanup skip such a file and count it.
var ErrBusy = errors.New("filelock: lock file busy")

// ErrClosed is returned by operations on a Locker after its Close.
var ErrClosed = errors.New("filelock: Locker closed")

// ErrDirMoved is wrapped by the error of an operation of a Locker whose
// directory's path no longer names the directory it opened: the directory
// was renamed, removed or replaced under it. Processes started since work
// in whatever is at the path now, so this Locker's locks exclude nobody:
// Obtain refuses to grant any, Refresh reports its lease lost (the error
// also matches lock.ErrNotHeld). Open a new Locker.
var ErrDirMoved = errors.New("filelock: lock directory moved")
