package lock

import "context"

type leaseKey struct{}

// ContextWithLease returns a copy of ctx carrying lease, for code that runs
// under a lock taken on its behalf.
func ContextWithLease(ctx context.Context, lease Lease) context.Context {
	return context.WithValue(ctx, leaseKey{}, lease)
}

// LeaseFromContext returns the lease ctx carries, if any: its key and
// fencing token are what a job passes to the resource it protects. Under
// Renewer.Run and Manager.Do it is the lease as last renewed, so its
// ExpiresAt says how long the lock is known to be held.
func LeaseFromContext(ctx context.Context) (Lease, bool) {
	switch v := ctx.Value(leaseKey{}).(type) {
	case Lease:
		return v, true
	case *Renewal:
		return v.Lease(), true
	}
	return Lease{}, false
}
