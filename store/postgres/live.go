package postgres

import (
	"context"
	"encoding/json"
	"time"

	"spool/rpc"
)

// Live events (a step's progress) are the running daemon's: it sends them to
// its own watchers, and through this relay to the other daemons', which are
// told by a NOTIFY on liveChannel. A burst is coalesced, the latest event of
// each job kept, and sent as one notification a tenth of a second at most;
// a relay that cannot keep up drops events, as a slow watcher does. Nothing
// of it is stored.

// liveChannel is the LISTEN/NOTIFY channel of live events.
const liveChannel = "spool_live"

// liveMax bounds a notification's payload (PostgreSQL takes 8,000 bytes).
const liveMax = 7000

// livePayload is a notification of live events.
type livePayload struct {
	From string      `json:"from"`
	Evs  []rpc.Event `json:"evs"`
}

// RelayLive sends a live event of a step this daemon runs to the other
// daemons' watchers. It never blocks: when the relay is busy, the event is
// dropped (the next one says more).
func (s *Store) RelayLive(ev rpc.Event) {
	select {
	case s.liveOut <- ev:
	default:
	}
}

// Live receives the live events other daemons relayed.
func (s *Store) Live() <-chan rpc.Event { return s.liveIn }

// relay sends the live events RelayLive took, coalesced.
func (s *Store) relay(ctx context.Context) {
	for {
		var first rpc.Event
		select {
		case <-ctx.Done():
			return
		case first = <-s.liveOut:
		}
		latest := map[int64]rpc.Event{first.Job: first}
		order := []int64{first.Job}
		window := time.After(100 * time.Millisecond)
	gather:
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-s.liveOut:
				if _, ok := latest[ev.Job]; !ok {
					order = append(order, ev.Job)
				}
				latest[ev.Job] = ev
			case <-window:
				break gather
			}
		}
		var batch []rpc.Event
		size := 0
		for _, id := range order {
			ev := latest[id]
			raw, err := json.Marshal(&ev)
			if err != nil {
				continue
			}
			if size+len(raw) > liveMax && len(batch) > 0 {
				s.notifyLive(ctx, batch)
				batch, size = nil, 0
			}
			if len(raw) > liveMax {
				continue
			}
			batch = append(batch, ev)
			size += len(raw) + 1
		}
		if len(batch) > 0 {
			s.notifyLive(ctx, batch)
		}
	}
}

// notifyLive sends one notification of live events.
func (s *Store) notifyLive(ctx context.Context, evs []rpc.Event) {
	raw, err := json.Marshal(livePayload{From: s.self, Evs: evs})
	if err != nil {
		return
	}
	nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(nctx, "SELECT pg_notify($1, $2)", liveChannel, string(raw)); err != nil && ctx.Err() == nil {
		s.log.Debug("postgres: relay live events", "err", err)
	}
}

// received takes the payload of a live notification in: the events of other
// daemons go to Live, dropped when its reader is behind.
func (s *Store) received(payload string) {
	var p livePayload
	if err := json.Unmarshal([]byte(payload), &p); err != nil || p.From == s.self {
		return
	}
	for _, ev := range p.Evs {
		select {
		case s.liveIn <- ev:
		default:
		}
	}
}
