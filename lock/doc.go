// Package lock is the engine-independent core of joblock: the Locker
// interface every engine implements, the Lease it hands out, the errors
// callers branch on, a bounded wait on top of any engine, running work
// under a renewed lease (Renewer), and the Manager that offers the
// LockManager API (acquire, release, acquireWithWait, isLocked,
// cleanupExpiredLocks, getStats, releaseAll, process).
//
// # Engines
//
// An engine obtains a lock once and never waits: lock/filelock keeps locks
// in a directory of files for processes on one host, and lock/redislock
// keeps them in Redis for processes on many hosts. Both are held to the
// same contract by the conformance suite in lock/locktest.
//
// # The contract
//
// Obtain either returns a Lease or an error. When someone else holds a live
// lock the error matches ErrNotObtained and, through *HeldError, says who
// holds it and for how long. An engine may also refuse new locks for a
// while with no holder known (ErrRestartGrace, as HeldError's Reason):
// such a key is not held by a live run, only closed for the TTL given. Every lease carries an owner token (random,
// unguessable) and a fencing token that strictly increases for a key across
// all holders and processes, so a resource that records the highest token it
// has seen can refuse the writes of a holder whose lease ran out.
//
// Refresh and Release succeed only for the current holder; otherwise they
// return ErrNotHeld. A late Release never removes the next holder's lock.
// Backend failures (permission denied, a full disk, Redis down) are returned
// as errors and are never reported as "already locked".
//
// # Running work under a lock
//
// Renewer.Run (and Manager.Do on top of it) is the one way joblock runs
// work under a lock, in the middleware, the scheduler and lockctl alike:
// obtain, renew, run, then stop renewing and release, on every path, a
// panic included. Liveness and run time are kept apart: the lock is held
// by a short lease (DefaultLease, 15s) renewed every third of it, so a
// crashed holder blocks its key for one lease at most, whatever the work's
// length; WithMaxRunTime bounds the run time on its own. The work's context
// is cancelled with a cause matching ErrLost as soon as a renewal finds the
// lock gone, and a margin (a third of the lease) before the lease could
// run out when renewals keep failing, so the work is told before anyone
// else can take the lock. One Renewer renews any number of leases from one
// goroutine.
//
// # What no TTL lock can promise
//
// A lease is a promise about time. A holder that stops for longer than its
// TTL (a long GC pause, a suspended VM) may still believe it holds the lock
// after another process took it over. Renew leases while working (KeepAlive,
// Manager.Do) and pass the fencing token to the resource you protect when
// two writers must never both succeed.
package lock
