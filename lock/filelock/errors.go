package filelock

import "errors"

// ErrNotLockFile is returned, wrapped with the path and what was found
// there, when a key's lock file is something the engine must not read or
// write: a symlink, directory, FIFO or other non-regular file, or a file
// with more than one hard link. Scan reports such entries as lock.Skipped
// records and Cleanup leaves them alone; removing them is for a person to
// decide.
var ErrNotLockFile = errors.New("filelock: not a lock file")
