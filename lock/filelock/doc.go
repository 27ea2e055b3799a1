// Package filelock is joblock's engine for one host: a directory of lock
// files, with no server to run. It is the embedded default.
//
// # Files
//
// A key's lock lives in md5(key).lock, JSON with the LockManager spec's
// fields (lock_id, key, expires_at, acquired_at, pid) and this engine's
// (host, fence, state, millisecond times, boot clock), so
// `cat *.lock | jq .` shows who holds what. The full key is stored and
// compared: two keys whose md5 collide contend, and never share a lock. A
// key taken with a limit over one (ObtainLimit) keeps its slots in
// md5(key).slots, and a marker in its lock file through which a plain lock
// and slots of one key exclude each other.
//
// # How it stays correct
//
// Every read-check-write of a lock file happens under an exclusive flock(2)
// on that file, so taking over an expired lock, refreshing and releasing
// are compare-and-swap operations on the owner token. Releasing marks the
// record released instead of deleting the file; only Cleanup deletes files,
// under the same flock, and an operation that finds its file deleted under
// it opens the path again. A key's new lock file is written whole before it
// appears under its name (O_TMPFILE and linkat on Linux, a temporary name
// renamed without replacing elsewhere): nobody ever sees it empty or half
// written, and a failed write leaves nothing behind. The fencing token is
// kept in the file and, for removed files, in a floor file (.fence) that is
// never deleted; tokens start above the wall clock in microseconds, so
// they keep rising across a lost directory, and never exceed 2^53.
//
// A flock is waited for at most WithBusyWait: a process stopped while it
// holds one makes its key refused (ErrBusy), and Scan and Cleanup skip the
// file, instead of hanging them.
//
// Expiry of a record written on this host since its last boot, by a
// process in the same time namespace, is judged by the boot clock
// (CLOCK_BOOTTIME on Linux), so stepping the wall clock neither frees a live
// lock nor holds a dead one. Records from another boot, another time
// namespace (whose boot clock is shifted) or another implementation are
// judged by the wall clock.
//
// An empty, unparseable or oversized lock file may be half written by
// another process or implementation: it counts as held for a grace period
// after its last change (WithCorruptGrace), then as expired. Only the first
// 16 KiB of a file are ever read.
//
// # Untrusted entries
//
// New opens the lock directory once, refusing a symlink at its path, and
// reaches every file through that descriptor, so nothing put at the path
// later redirects it. It refuses a directory another user could write to
// (see WithSharedGroup for a group's).
//
// Every entry named like a lock file is checked after it is opened: a
// symlink, directory, FIFO or other non-regular file, or a file with more
// than one hard link, is never read or written. Operations on its key
// return an error wrapping ErrNotLockFile; Scan reports it as a
// lock.Skipped record and Cleanup leaves it alone, so one stray entry never
// stops either; so are files this process may not open, files kept busy,
// and names in uppercase hex, which this engine never writes. A record
// whose expiry lies further ahead than lock.MaxTTL, or whose token is over
// 2^53, is forged and counts as corrupt.
//
// # Speed
//
// A key used before costs no inode creation or deletion: the file is
// rewritten in place. A Locker keeps the descriptors of the last 128 lock
// files it used (never under a flock), so a key that comes back costs no
// open; under its flock, an operation on a kept descriptor checks that the
// file at the path is still the one it has open, and opens the path again
// when not (removed by cleanup, or moved away). A new key
// costs an open, a write and a link (and no failed open first: a Locker
// remembers which keys' files it has seen); the floor file is read at most
// once per 10ms per Locker, and the boot clock is read off Go's monotonic
// clock.
//
// # Limits
//
// Locks exclude processes on one host only. New refuses a directory on
// NFS, SMB/CIFS or 9p. Linux and macOS are supported; elsewhere New
// returns ErrUnsupported. Fencing tokens increase across all processes
// using this engine; a file rewritten or deleted by another implementation
// (the PHP LockManager deletes expired files) restarts its key from the
// floor.
package filelock
