package cluster

import (
	"context"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"fastlb/config"
)

// maxAttempts bounds the tries of one change while the pool keeps changing
// under it.
const maxAttempts = 8

// Add adds b to the pool in etcd and returns the revision of the commit.
func (n *Node) Add(pool string, b config.Backend) (int64, error) {
	return n.change(pool, func(list []config.BackendView) ([]config.BackendView, error) {
		if slices.ContainsFunc(list, func(v config.BackendView) bool { return v.ID == b.ID }) {
			return nil, fmt.Errorf("%w: %q", ErrExists, b.ID)
		}
		return append(list, config.BackendView{URL: b.URL, Weight: b.Weight, ID: b.ID, MaxConns: b.MaxConns, State: b.State}), nil
	})
}

// Update changes a backend's weight and state (nil: unchanged).
func (n *Node) Update(pool, id string, weight *int, state *string) (int64, error) {
	return n.change(pool, func(list []config.BackendView) ([]config.BackendView, error) {
		i := slices.IndexFunc(list, func(v config.BackendView) bool { return v.ID == id })
		if i < 0 {
			return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		if weight != nil {
			list[i].Weight = *weight
		}
		if state != nil {
			list[i].State = *state
		}
		return list, nil
	})
}

// Remove removes a backend from the pool.
func (n *Node) Remove(pool, id string) (int64, error) {
	return n.change(pool, func(list []config.BackendView) ([]config.BackendView, error) {
		i := slices.IndexFunc(list, func(v config.BackendView) bool { return v.ID == id })
		if i < 0 {
			return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		return slices.Delete(list, i, i+1), nil
	})
}

// change writes fn's edit of the pool's backends in one transaction that
// compares the pool's revision with the one the edit was made on: one
// round trip when this instance has applied the latest state, and the
// transaction's Else branch reads the newer state for the next try when it
// has not. It returns the commit's revision.
func (n *Node) change(pool string, fn func([]config.BackendView) ([]config.BackendView, error)) (int64, error) {
	if !n.connected.Load() {
		return 0, ErrUnavailable
	}
	key := n.key("pools", pool)
	n.mu.Lock()
	var list []config.BackendView
	var rev int64
	if ps := n.pools[pool]; ps != nil {
		list, rev = slices.Clone(ps.Backends), ps.modRev
	}
	n.mu.Unlock()
	fresh := false // list is as etcd has it now, not as this instance last applied it
	for range maxAttempts {
		next, err := fn(list)
		if err != nil && fresh {
			return 0, err
		}
		if err != nil {
			// This instance may not have applied the latest change yet:
			// decide on what etcd holds.
			if list, rev, err = n.read(key); err != nil {
				return 0, err
			}
			fresh = true
			continue
		}
		ctx, cancel := n.call(context.Background())
		resp, err := n.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(encodePool(next)))).
			Else(clientv3.OpGet(key)).
			Commit()
		cancel()
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
		// Changed since: edit what is there now.
		if list, rev, err = decodeRange(resp.Responses[0].GetResponseRange().Kvs); err != nil {
			return 0, err
		}
		fresh = true
	}
	return 0, ErrConflict
}

// read reads a pool's key: its backends and revision (0 when absent).
func (n *Node) read(key string) ([]config.BackendView, int64, error) {
	ctx, cancel := n.call(context.Background())
	defer cancel()
	resp, err := n.cli.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return decodeRange(resp.Kvs)
}

func decodeRange(kvs []*mvccpb.KeyValue) ([]config.BackendView, int64, error) {
	if len(kvs) == 0 {
		return nil, 0, nil
	}
	ps := decodePool(kvs[0].Value, kvs[0].ModRevision)
	if ps == nil {
		return nil, 0, fmt.Errorf("pool %q in the cluster store does not decode", kvs[0].Key)
	}
	return ps.Backends, ps.modRev, nil
}
