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
// Obtain that would have to hand out a fencing token greater than the
// largest uint64: a lock file, or the fencing floor file (.fence), holds
// that largest token, which this engine never reaches by counting, so
// something else wrote it. Tokens never wrap around: the lock is not taken
// and nothing is written.
var ErrFenceExhausted = errors.New("filelock: fencing tokens exhausted")

// ErrUnsafeDir is returned by New, wrapped with the directory, what is
// wrong and how to fix it, for a directory in which another user could
// delete or forge lock files: one owned by another user, or writable by
// every user (or, unless WithSharedGroup, by its group) without the sticky
// bit.
var ErrUnsafeDir = errors.New("filelock: unsafe lock directory")
