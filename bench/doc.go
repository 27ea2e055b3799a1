// Package bench compares joblock's engines with their peers in one run. It
// is a module of its own so the main module never depends on the peers.
//
//	cd bench && go test -run '^$' -bench . -benchmem
//
// The Redis benchmarks use REDIS_ADDR (default 127.0.0.1:6379) under a key
// prefix of their own and delete nothing else.
package bench
