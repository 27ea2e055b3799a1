// Package bench compares joblock with its peers (bsm/redislock, redsync,
// gofrs/flock, the spec's own file algorithm) and with asynq without the
// middleware, in one run, and prints the README's performance tables. It is
// a module of its own, so the main module never depends on the peers.
//
//	cd bench && go run ./report
//
// The Redis figures use REDIS_ADDR (default 127.0.0.1:6379) under key
// prefixes of their own and delete nothing else. The main module's own
// benchmarks (go test -bench in lock/filelock and middleware) measure one
// engine at a time.
package bench
