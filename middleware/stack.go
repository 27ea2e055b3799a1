package middleware

// growStack grows the calling goroutine's stack by stackReserve bytes in
// one step, while it is still shallow.
//
// asynq runs every task on a goroutine of its own, whose stack starts
// small. Left to itself, that stack grew twice per task on the way through
// the middleware and an engine, each time copying every frame on it: most
// of the middleware's cost per task over an engine that does nothing
// (BenchmarkOwnGoroutine, with this call and without). Grown here, a few
// frames deep, it grows once and cheaply, to a size that the deepest call
// of either engine fits in; on a goroutine whose stack is large enough
// already it costs the clearing of the reserve.
//
//go:noinline
func growStack() byte {
	var reserve [stackReserve]byte
	reserve[stackTouch] = 1 // at an index the compiler cannot see, so the array is kept
	return reserve[stackTouch]
}

const stackReserve = 6 << 10

var stackTouch = 0
