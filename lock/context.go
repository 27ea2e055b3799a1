package lock

import "context"

type leaseKey struct{}

// ContextWithLease returns a copy of ctx carrying lease, for code that runs
// under a lock taken on its behalf (Manager.Do, the asynq middleware, the
// scheduler).
func ContextWithLease(ctx context.Context, lease Lease) context.Context {
	return context.WithValue(ctx, leaseKey{}, lease)
}

// LeaseFromContext returns the lease ctx carries, if any: its key and
// fencing token are what a job passes to the resource it protects. The
// lease is the one obtained when the job started; renewals move its expiry
// but not its key, owner or fencing token.
func LeaseFromContext(ctx context.Context) (Lease, bool) {
	l, ok := ctx.Value(leaseKey{}).(Lease)
	return l, ok
}
