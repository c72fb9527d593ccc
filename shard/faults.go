package shard

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// Faults injects network faults between node ids into the mux's
// connections (Raft and internal RPC alike). The zero value injects
// nothing. Tests share one Faults among in-process nodes; a process started
// with the test-only fault flag exposes its own at /debug/faults.
type Faults struct {
	mu       sync.RWMutex
	drop     map[link]bool
	dropRaft map[link]bool
	delay    map[link]time.Duration
}

type link struct{ from, to string }

// FaultRule is one directed fault, as set through /debug/faults.
type FaultRule struct {
	From     string        `json:"from" msgpack:"from"`
	To       string        `json:"to" msgpack:"to"`
	Drop     bool          `json:"drop,omitempty" msgpack:"drop"`
	RaftOnly bool          `json:"raft_only,omitempty" msgpack:"raft_only"` // with Drop: Raft traffic only
	Delay    time.Duration `json:"delay_ns,omitempty" msgpack:"delay"`
}

// Drop makes every byte from one node to another fail (one-way).
func (f *Faults) Drop(from, to string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.drop == nil {
		f.drop = map[link]bool{}
	}
	f.drop[link{from, to}] = true
}

// DropRaft makes Raft traffic from one node to another fail (one-way),
// leaving internal RPC between them working: the receiver falls behind but
// stays reachable.
func (f *Faults) DropRaft(from, to string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dropRaft == nil {
		f.dropRaft = map[link]bool{}
	}
	f.dropRaft[link{from, to}] = true
}

// Delay adds d before every write from one node to another.
func (f *Faults) Delay(from, to string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.delay == nil {
		f.delay = map[link]time.Duration{}
	}
	f.delay[link{from, to}] = d
}

// Partition drops traffic both ways between every node of a and every node
// of b.
func (f *Faults) Partition(a, b []string) {
	for _, x := range a {
		for _, y := range b {
			f.Drop(x, y)
			f.Drop(y, x)
		}
	}
}

// Isolate partitions id from every other node in ids.
func (f *Faults) Isolate(id string, ids []string) {
	var others []string
	for _, o := range ids {
		if o != id {
			others = append(others, o)
		}
	}
	f.Partition([]string{id}, others)
}

// Heal removes every fault.
func (f *Faults) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drop, f.dropRaft, f.delay = nil, nil, nil
}

// Rules lists the faults in force.
func (f *Faults) Rules() []FaultRule {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []FaultRule
	for l := range f.drop {
		out = append(out, FaultRule{From: l.from, To: l.to, Drop: true})
	}
	for l := range f.dropRaft {
		out = append(out, FaultRule{From: l.from, To: l.to, Drop: true, RaftOnly: true})
	}
	for l, d := range f.delay {
		out = append(out, FaultRule{From: l.from, To: l.to, Delay: d})
	}
	return out
}

// Set replaces every fault with rules.
func (f *Faults) Set(rules []FaultRule) {
	f.Heal()
	for _, r := range rules {
		switch {
		case r.Drop && r.RaftOnly:
			f.DropRaft(r.From, r.To)
		case r.Drop:
			f.Drop(r.From, r.To)
		}
		if r.Delay > 0 {
			f.Delay(r.From, r.To, r.Delay)
		}
	}
}

// check returns whether traffic from→to (Raft traffic when raft) is
// dropped, and its delay.
func (f *Faults) check(from, to string, raft bool) (dropped bool, delay time.Duration) {
	if f == nil {
		return false, 0
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	l := link{from, to}
	return f.drop[l] || (raft && f.dropRaft[l]), f.delay[l]
}

// Handler serves the faults as JSON: GET lists the rules in force, PUT
// replaces them with a JSON array of FaultRule, DELETE heals everything. It
// exists for fault-injection tests; mount it only on a node started with the
// test-only flag.
func (f *Faults) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
		case http.MethodPut:
			var rules []FaultRule
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&rules); err != nil {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]string{"error": "shard: bad fault rules: " + err.Error(), "code": "bad_request"})
				return
			}
			f.Set(rules)
		case http.MethodDelete:
			f.Heal()
		default:
			w.Header().Set("Allow", "GET, PUT, DELETE")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusMethodNotAllowed)
			json.NewEncoder(w).Encode(map[string]string{"error": "method not allowed", "code": "method_not_allowed"})
			return
		}
		rules := f.Rules()
		if rules == nil {
			rules = []FaultRule{}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rules)
	})
}
