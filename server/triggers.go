package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	"lambdadb/changefeed"
	"lambdadb/lambda"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// storedTrigger returns the stored name of the trigger the request names
// in its path (a name of the request's namespace).
func storedTrigger(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := changefeed.ValidateTriggerName(name); err != nil {
		return "", err
	}
	return namespace.Name(namespace.From(r.Context()), name), nil
}

// userTrigger returns tr as its namespace's users see it: user names and
// prefix.
func userTrigger(tr *changefeed.Trigger) *changefeed.Trigger {
	ns, name := namespace.SplitName(tr.Name)
	if ns == namespace.Default {
		return tr
	}
	c := *tr
	c.Name = name
	_, c.Function = namespace.SplitName(tr.Function)
	c.Prefix, _ = namespace.Strip(ns, tr.Prefix)
	return &c
}

// triggerView is a trigger with its per-shard status.
type triggerView struct {
	*changefeed.Trigger
	Shards      []triggerShard `json:"shards"`
	Delivered   uint64         `json:"delivered"`
	Invocations uint64         `json:"invocations"`
	Retries     uint64         `json:"retries"`
	DeadLetters uint64         `json:"dead_letters"`
	Lag         uint64         `json:"lag"`
	// IteratorAgeMS is the largest of the shards' iterator ages.
	IteratorAgeMS int64 `json:"iterator_age_ms"`
	// CheckpointExpired, for a paused trigger, says which of its
	// checkpoints the feed was trimmed past (see Resume).
	CheckpointExpired string `json:"checkpoint_expired,omitempty"`
}

type triggerShard struct {
	changefeed.ShardStats
	Lag uint64 `json:"lag"` // Raft entries between the checkpoint and the shard's applied index
	// IteratorAgeMS is the age of the oldest change not delivered yet
	// (0: none waiting).
	IteratorAgeMS int64 `json:"iterator_age_ms"`
}

// triggerBody is the body of PUT /v1/triggers/{name}. The numeric fields
// are pointers so that an absent field (default) and a given 0 (taken as
// given: no retries, no wait; batch_size 0 is out of range) differ.
type triggerBody struct {
	Function   string   `json:"function"`
	Prefix     string   `json:"prefix"`
	Events     []string `json:"events"`
	BatchSize  *int     `json:"batch_size"`
	MaxWaitMS  *int     `json:"max_wait_ms"`
	MaxRetries *int     `json:"max_retries"`
	PauseAfter *int     `json:"pause_after"`
	Start      string   `json:"start"`
}

func (s *Server) putTrigger(w http.ResponseWriter, r *http.Request) {
	if _, err := queryParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	b, err := readBody(w, r, 1<<20, errBadBody)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var body triggerBody
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: body: %v", changefeed.ErrInvalidTrigger, err))
		return
	}
	if dec.More() {
		s.writeError(w, r, fmt.Errorf("%w: body: trailing data after the JSON object", changefeed.ErrInvalidTrigger))
		return
	}
	name, err := storedTrigger(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ns := namespace.From(r.Context())
	fn := body.Function
	if fn != "" {
		// The trigger's function is one of its own namespace.
		if err := lambda.ValidateName(fn); err != nil {
			s.writeError(w, r, fmt.Errorf("%w: function: %v", changefeed.ErrInvalidTrigger, err))
			return
		}
		fn = namespace.Name(ns, fn)
	}
	if err := namespace.ValidatePrefix(body.Prefix); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: prefix: %v", changefeed.ErrInvalidTrigger, err))
		return
	}
	tr, err := s.triggers.Define(r.Context(), changefeed.TriggerSpec{Name: name, Function: fn,
		Prefix: namespace.Prefix(ns, body.Prefix), Events: body.Events, BatchSize: body.BatchSize, MaxWaitMS: body.MaxWaitMS,
		MaxRetries: body.MaxRetries, PauseAfter: body.PauseAfter, Start: body.Start})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, userTrigger(tr))
}

func (s *Server) listTriggers(w http.ResponseWriter, r *http.Request) {
	local, err := s.scopeParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	trs, err := s.triggers.List(r.Context(), shard.ReadOptions{Consistency: shard.Linearizable})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ns := namespace.From(r.Context())
	out := []triggerView{}
	for _, tr := range trs {
		if _, ok := namespace.StripName(ns, tr.Name); ok {
			out = append(out, s.triggerStatus(r.Context(), tr, local))
		}
	}
	writeJSON(w, http.StatusOK, struct {
		Triggers []triggerView `json:"triggers"`
	}{out})
}

func (s *Server) getTrigger(w http.ResponseWriter, r *http.Request) {
	local, err := s.scopeParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	name, err := storedTrigger(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tr, err := s.triggers.Get(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.triggerStatus(r.Context(), tr, local))
}

func (s *Server) triggerStatus(ctx context.Context, tr *changefeed.Trigger, local bool) triggerView {
	v := triggerView{Trigger: userTrigger(tr)}
	var all []changefeed.ShardStats
	if local {
		all = s.triggers.Status(tr.Name)
	} else {
		var mu sync.Mutex
		s.fanOut(ctx, func(ctx context.Context, p shard.PeerState, self bool) {
			var got []changefeed.ShardStats
			if self {
				got = s.triggers.Status(tr.Name)
			} else {
				var pv triggerView
				// The peer serves its public API: it takes the user name.
				if err := s.peerGet(ctx, p.Addr, "/v1/triggers/"+url.PathEscape(v.Name)+"?scope=node", &pv); err != nil {
					return
				}
				for _, sh := range pv.Shards {
					got = append(got, sh.ShardStats)
				}
			}
			mu.Lock()
			all = append(all, got...)
			mu.Unlock()
		})
	}
	best := map[int]changefeed.ShardStats{}
	most := map[int]changefeed.ShardStats{}
	for _, st := range all {
		if st.Definition != 0 && st.Definition != tr.Version {
			continue // counted for an earlier definition of the name
		}
		b, ok := best[st.Shard]
		if !ok || (st.Running && !b.Running) || (st.Running == b.Running && st.Position > b.Position) {
			best[st.Shard] = st
		}
		m := most[st.Shard]
		m.Delivered = max(m.Delivered, st.Delivered)
		m.Invocations = max(m.Invocations, st.Invocations)
		m.Retries = max(m.Retries, st.Retries)
		m.DeadLetters = max(m.DeadLetters, st.DeadLetters)
		m.Atomic = max(m.Atomic, st.Atomic)
		most[st.Shard] = m
	}
	for sh, st := range best {
		m := most[sh]
		st.Delivered, st.Invocations, st.Retries, st.DeadLetters, st.Atomic = m.Delivered, m.Invocations, m.Retries, m.DeadLetters, m.Atomic
		ts := triggerShard{ShardStats: st}
		if applied := s.node.AppliedIndex(sh); applied > st.Checkpoint {
			ts.Lag = applied - st.Checkpoint
		}
		if !st.Oldest.IsZero() {
			ts.IteratorAgeMS = max(0, time.Since(st.Oldest).Milliseconds())
		}
		v.IteratorAgeMS = max(v.IteratorAgeMS, ts.IteratorAgeMS)
		v.Shards = append(v.Shards, ts)
		v.Delivered += st.Delivered
		v.Invocations += st.Invocations
		v.Retries += st.Retries
		v.DeadLetters += st.DeadLetters
		v.Lag += ts.Lag
	}
	sort.Slice(v.Shards, func(i, j int) bool { return v.Shards[i].Shard < v.Shards[j].Shard })
	if v.Shards == nil {
		v.Shards = []triggerShard{}
	}
	if tr.Paused() && !local {
		if gaps, err := s.triggers.ExpiredCheckpoints(ctx, tr, shard.Stale); err == nil && len(gaps) > 0 {
			v.CheckpointExpired = changefeed.ExpiredMessage(gaps)
		}
	}
	return v
}

func (s *Server) pauseTrigger(w http.ResponseWriter, r *http.Request) {
	name, ok := s.triggerRoute(w, r)
	if !ok {
		return
	}
	tr, err := s.triggers.Pause(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.triggerStatus(r.Context(), tr, false))
}

// resumeTrigger resumes a paused trigger; from (checkpoint, the default,
// now or beginning) says where each shard goes on from.
func (s *Server) resumeTrigger(w http.ResponseWriter, r *http.Request) {
	q, err := queryParams(r, "from")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	from := changefeed.ResumeCheckpoint
	if v, ok := q["from"]; ok {
		from = v[0]
	}
	switch from {
	case changefeed.ResumeCheckpoint, changefeed.ResumeNow, changefeed.ResumeBeginning:
	default:
		s.writeError(w, r, fmt.Errorf("%w: from=%q (want checkpoint, now or beginning)", errBadParameter, from))
		return
	}
	name, err := storedTrigger(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tr, err := s.triggers.Resume(r.Context(), name, from)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.triggerStatus(r.Context(), tr, false))
}

func (s *Server) deleteTrigger(w http.ResponseWriter, r *http.Request) {
	name, ok := s.triggerRoute(w, r)
	if !ok {
		return
	}
	if err := s.triggers.Delete(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Deleted bool `json:"deleted"`
	}{true})
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	name, ok := s.triggerRoute(w, r)
	if !ok {
		return
	}
	dl, err := s.triggers.DeadLetters(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ns := namespace.From(r.Context())
	for i := range dl {
		dl[i].Key, _ = namespace.Strip(ns, dl[i].Key)
	}
	writeJSON(w, http.StatusOK, struct {
		Dead []changefeed.DeadLetter `json:"dead"`
	}{dl})
}

// deadLetterID returns the dead letter id the request names in its path.
func deadLetterID(r *http.Request) string { return r.PathValue("id") }

// replayDeadLetter serves POST /v1/triggers/{name}/dead/{id}/replay: the
// letter's change goes to the trigger's function now; 200 with the
// outcome whether the handler took it (the letter is gone) or failed
// again (it stays, with the new error).
func (s *Server) replayDeadLetter(w http.ResponseWriter, r *http.Request) {
	name, ok := s.triggerRoute(w, r)
	if !ok {
		return
	}
	res, err := s.triggers.ReplayDeadLetter(r.Context(), name, deadLetterID(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, userReplay(r.Context(), res))
}

// replayDeadLetters serves POST /v1/triggers/{name}/dead/replay: every
// dead letter of the trigger, replayed in turn.
func (s *Server) replayDeadLetters(w http.ResponseWriter, r *http.Request) {
	name, ok := s.triggerRoute(w, r)
	if !ok {
		return
	}
	res, err := s.triggers.ReplayDeadLetters(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := replayAll{Replayed: []changefeed.ReplayResult{}}
	for _, x := range res {
		x = userReplay(r.Context(), x)
		out.Replayed = append(out.Replayed, x)
		if x.Delivered {
			out.Delivered++
		} else {
			out.Failed++
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// replayAll is the answer of POST /v1/triggers/{name}/dead/replay.
type replayAll struct {
	Delivered int                       `json:"delivered"`
	Failed    int                       `json:"failed"`
	Replayed  []changefeed.ReplayResult `json:"replayed"`
}

// dropDeadLetter serves DELETE /v1/triggers/{name}/dead/{id}.
func (s *Server) dropDeadLetter(w http.ResponseWriter, r *http.Request) {
	name, ok := s.triggerRoute(w, r)
	if !ok {
		return
	}
	if err := s.triggers.DropDeadLetter(r.Context(), name, deadLetterID(r)); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Dropped bool `json:"dropped"`
	}{true})
}

// userReplay shows a replay's letter with its user key.
func userReplay(ctx context.Context, x changefeed.ReplayResult) changefeed.ReplayResult {
	if x.Dead != nil {
		l := *x.Dead
		l.Key, _ = namespace.Strip(namespace.From(ctx), l.Key)
		x.Dead = &l
	}
	return x
}

// triggerRoute checks a trigger route that takes no query parameters and
// returns the stored name of the trigger its path names; on bad input it
// has answered the error and ok is false.
func (s *Server) triggerRoute(w http.ResponseWriter, r *http.Request) (name string, ok bool) {
	if _, err := queryParams(r); err != nil {
		s.writeError(w, r, err)
		return "", false
	}
	name, err := storedTrigger(r)
	if err != nil {
		s.writeError(w, r, err)
		return "", false
	}
	return name, true
}
