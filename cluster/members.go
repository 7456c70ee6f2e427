package cluster

import (
	"context"
	"crypto/rand"
	"slices"
	"time"

	json "github.com/goccy/go-json"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Member is one live instance of the fleet.
type Member struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Address string `json:"address"` // of its admin API
	// AppliedRevision is the etcd revision of the last change of backends
	// or secrets it has in force.
	AppliedRevision int64     `json:"applied_revision"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// sessionTTL is how long a member key outlives its instance's last
// keep-alive, in seconds.
const sessionTTL = 10

// members keeps this instance's member key, bound to a lease, up to date
// (its applied revision at most once a second) until ctx ends; a lease
// lost is replaced once etcd is reached again.
func (n *Node) members(ctx context.Context) {
	for ctx.Err() == nil {
		sess, err := n.session(ctx)
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		var last int64 = -1
		t := time.NewTicker(time.Second)
		for ctx.Err() == nil {
			if rev := n.changed.Load(); rev != last {
				if n.putMember(ctx, sess.Lease()) == nil {
					last = rev
				}
			}
			select {
			case <-ctx.Done():
			case <-sess.Done():
			case <-t.C:
				continue
			}
			break
		}
		t.Stop()
		sess.Close()
	}
}

// session grants a lease with a deadline of its own and keeps it alive.
func (n *Node) session(ctx context.Context) (*concurrency.Session, error) {
	cctx, cancel := n.call(ctx)
	lease, err := n.cli.Grant(cctx, sessionTTL)
	cancel()
	if err != nil {
		return nil, err
	}
	return concurrency.NewSession(n.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx))
}

func (n *Node) putMember(ctx context.Context, lease clientv3.LeaseID) error {
	m := Member{Name: n.cfg.Name, Version: n.opts.Version, Address: n.opts.Address, AppliedRevision: n.changed.Load(),
		UpdatedAt: time.Now().UTC()}
	b, _ := json.Marshal(m)
	cctx, cancel := n.call(ctx)
	defer cancel()
	_, err := n.cli.Put(cctx, n.key("members", n.cfg.Name), string(b), clientv3.WithLease(lease))
	return err
}

// Status is this instance's view of the fleet.
type Status struct {
	Name            string   `json:"name"`
	Connected       bool     `json:"connected"`
	AppliedRevision int64    `json:"applied_revision"`
	Members         []Member `json:"members"`
	// TicketRotator is the member elected to renew the TLS ticket keys.
	TicketRotator string `json:"ticket_rotator"`
}

// Status reads the live members from etcd (none when it cannot be
// reached).
func (n *Node) Status() Status {
	s := Status{Name: n.cfg.Name, Connected: n.connected.Load(), AppliedRevision: n.applied.Load(), Members: []Member{}}
	if !s.Connected {
		return s
	}
	ctx, cancel := n.call(context.Background())
	defer cancel()
	resp, err := n.cli.Get(ctx, n.key("members")+"/", clientv3.WithPrefix())
	if err != nil {
		s.Connected = false
		return s
	}
	for _, kv := range resp.Kvs {
		var m Member
		if json.Unmarshal(kv.Value, &m) == nil {
			s.Members = append(s.Members, m)
		}
	}
	slices.SortFunc(s.Members, func(a, b Member) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	if leader, err := n.cli.Get(ctx, n.key("election", "tickets")+"/", clientv3.WithFirstCreate()...); err == nil && len(leader.Kvs) > 0 {
		s.TicketRotator = string(leader.Kvs[0].Value)
	}
	return s
}

// rotateTickets campaigns to be the instance that renews the TLS ticket
// keys; once elected it adds a fresh key every TicketInterval (keeping the
// last ticketKeys), until ctx ends or it loses its lease.
func (n *Node) rotateTickets(ctx context.Context) {
	for ctx.Err() == nil {
		sess, err := n.session(ctx)
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		e := concurrency.NewElection(sess, n.key("election", "tickets"))
		if err := e.Campaign(ctx, n.cfg.Name); err != nil {
			sess.Close()
			sleep(ctx, time.Second)
			continue
		}
		n.logger.Info("elected to rotate the TLS session-ticket keys")
		for {
			wait := n.nextRotation()
			select {
			case <-ctx.Done():
			case <-sess.Done():
			case <-time.After(wait):
				if err := n.rotate(ctx); err != nil {
					n.logger.Warn("cannot rotate the TLS session-ticket keys", "error", err)
				}
				continue
			}
			break
		}
		sess.Close()
	}
}

// ticketKeys is how many ticket keys are kept: a session resumes for that
// many rotations.
const ticketKeys = 3

// nextRotation is how long until the newest ticket key is TicketInterval
// old.
func (n *Node) nextRotation() time.Duration {
	ctx, cancel := n.call(context.Background())
	defer cancel()
	resp, err := n.cli.Get(ctx, n.key("secrets", "tickets"))
	if err != nil || len(resp.Kvs) == 0 {
		return n.opts.TicketInterval
	}
	var d ticketsDoc
	if json.Unmarshal(resp.Kvs[0].Value, &d) != nil {
		return 0
	}
	return max(time.Until(time.Unix(d.RotatedAt, 0).Add(n.opts.TicketInterval)), 0)
}

// rotate puts a fresh key first in the shared ticket keys.
func (n *Node) rotate(ctx context.Context) error {
	key := n.key("secrets", "tickets")
	cctx, cancel := n.call(ctx)
	defer cancel()
	resp, err := n.cli.Get(cctx, key)
	if err != nil {
		return err
	}
	var keys [][32]byte
	var rev int64
	if len(resp.Kvs) > 0 {
		keys, rev = decodeTickets(resp.Kvs[0].Value), resp.Kvs[0].ModRevision
	}
	var fresh [32]byte
	rand.Read(fresh[:])
	keys = append([][32]byte{fresh}, keys[:min(len(keys), ticketKeys-1)]...)
	_, err = n.cli.Txn(cctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(encodeTickets(keys)))).Commit()
	return err
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
