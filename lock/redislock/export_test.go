package redislock

// MaxInFlight is how many batches may be on the wire at once, for tests
// that fill every slot.
const MaxInFlight = maxInFlight
