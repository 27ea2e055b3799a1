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
// # Fencing counters
//
// Each successful Obtain increments the key's counter. A counter expires
// when its key has not been obtained or refreshed for the retention period
// (WithFenceRetention, default 24h), so counters of keys used once do not
// pile up. A counter created afresh starts at the Redis server's clock in
// microseconds rather than at 1, so tokens stay strictly increasing across
// a forgotten counter as long as the server's clock does not step back by
// more than the retention period. The price: tokens are large numbers.
//
// Redis replication is asynchronous: if a primary fails over before a new
// lock reached its replica, a second holder can obtain the same key. Use
// the fencing token where that matters.
package redislock
