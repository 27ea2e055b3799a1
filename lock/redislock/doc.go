// Package redislock is joblock's engine for many hosts: locks in Redis
// through go-redis v9, on a single node, Sentinel (a failover client) or
// Cluster.
//
// # Keys
//
// The lock on key K is the string <prefix>{K} and its fencing counter is
// <prefix>{K}:fence. The braces are a Cluster hash tag, so both live in one
// hash slot and every operation is one Lua script, one round trip. A key
// that starts with "}" would make the tag empty, and Cluster would hash
// each name whole into different slots: such a key is stored as
// <prefix>{\x00K}, whose tag is "\x00" for the lock and its counter.
//
// The lock's value is "<owner token> <acquired unix ms> <pid> <host>
// <fencing token>" with a PX expiry; Redis itself removes expired locks, and
// Release deletes the lock, so Cleanup has nothing to do.
//
// # Fencing tokens
//
// Each successful Obtain hands out the larger of the key's counter plus one
// and the Redis server's clock in microseconds, and stores it as the new
// counter. Tokens therefore stay strictly increasing across everything
// that makes Redis forget the counter: its expiry (a key idle for the
// retention period, WithFenceRetention, default 24h, so counters of keys
// used once do not pile up), a restart from an older snapshot or AOF, or a
// failover to a replica that had not received the latest increments. The
// one condition is that the server clock does not go back: after a
// failover, the new primary's clock must not be behind the old one's by
// more than the time the failover took. The price: tokens are large
// numbers.
//
// # What a restart or failover can do to a lock
//
// Redis replication is asynchronous, and a server without persistence
// restarts empty. Either way a live lock can vanish while its holder still
// works under it. The holder learns of it at its next renewal (the lock is
// gone: its work's context is cancelled with lock.ErrLost), which comes
// within a third of its lease, or, when renewals fail, a safety margin
// before its lease could run out.
//
// # The restart grace
//
// So that nobody takes such a key before its old holder knows, a Locker
// grants no new lock (nor slot) on a Redis node until the node has been up
// for the restart grace, WithRestartGrace, by default DefaultRestartGrace
// (15s, lock.DefaultLease): long enough for every holder from before the
// restart to have been told. Set it to at least the longest lease any
// holder of that Redis uses. Windows a key is kept for after its work
// (lock.WithWindow, the scheduler's once-per-tick) are protected only as
// far as the grace reaches: a restart that loses a longer window lets the
// key be taken again once the grace is over.
//
// An Obtain refused by the grace returns a *lock.HeldError whose Reason is
// lock.ErrRestartGrace, whose TTL is how long the grace still runs and
// whose Holder says why ("redis restarted 3s ago; new locks wait out the
// 15s grace"). It matches lock.ErrNotObtained, so waits and retries work
// as for a held key, but no holder is known: joblock's middleware retries
// such a task whatever its policy, and its scheduler waits the grace out.
// Refreshes and releases are never held back.
//
// A brand-new Redis looks like a restarted one: its first grace is paid
// too. Tests that start a Redis of their own, where no holder can predate
// it, use WithRestartGrace(0).
//
// The grace costs nothing on the way to a lock. Redis 7 neither persists
// nor replicates its script cache, so a restarted node no longer knows the
// obtain script. A Locker sends that script by its hash only, and when the
// node does not know it, asks the node for its uptime (INFO server) and
// loads the script (SCRIPT LOAD) over one connection, and only once the
// uptime has reached the grace. From then on, for every client of that
// node, an Obtain is the one EVALSHA it would be without a grace. On a
// Cluster each master is checked on its own: a restarted master holds back
// only the keys it serves. A client that cannot reach one node by itself
// (not a go-redis Client or ClusterClient, say a wrapper that only runs
// scripts) gets an obtain script that reads the uptime itself, at the
// price of an INFO per Obtain. The grace needs INFO and SCRIPT LOAD to be
// allowed. Redis counts uptime in whole seconds on its clock, so the grace
// ends at an uptime above it, up to a second late.
//
// What the grace does not cover: a failover to a replica that missed the
// latest locks (its uptime is long), FLUSHALL, and, on Redis 6, a restart
// that replays an AOF, which loads the scripts again. There the overlap is
// bounded by a third of the lease, as above. Resources that must never
// accept both holders should check the fencing token, which the second
// holder's is always above.
package redislock
