package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"

	"lambdadb/changefeed"
	"lambdadb/console"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// The console's triggers and query pages run the API's own code: the
// trigger status of GET /v1/triggers, the dead-letter actions, and
// POST /v1/query's handler, for the request's namespace and principal.

// consoleTriggers implements console.Triggers.
type consoleTriggers struct{ s *Server }

// consoleTriggersOf returns the console's view of the node's triggers
// (nil when the node runs none).
func (s *Server) consoleTriggersOf() console.Triggers {
	if s.triggers == nil {
		return nil
	}
	return consoleTriggers{s}
}

// consoleErr gives err the API's status for it.
func consoleErr(err error) error {
	if err == nil {
		return nil
	}
	st, _ := errorStatus(err)
	return &console.Error{Status: st, Err: err}
}

// check runs the API route's policy for the console's principal (in
// secure mode); the console's GET pages are open to any token, so what
// they show of triggers needs what the API asks.
func check(r *http.Request, pol policy) error {
	if p := principalOf(r.Context()); p != nil {
		return consoleErr(pol(r, p))
	}
	return nil
}

// stored returns trigger name's stored name in the request's namespace.
func stored(r *http.Request, name string) (string, error) {
	if err := changefeed.ValidateTriggerName(name); err != nil {
		return "", consoleErr(err)
	}
	return namespace.Name(namespace.From(r.Context()), name), nil
}

func (c consoleTriggers) List(r *http.Request) ([]console.TriggerStatus, error) {
	if err := check(r, policies["trigger_list"]); err != nil {
		return nil, err
	}
	trs, err := c.s.triggers.List(r.Context(), shard.ReadOptions{Consistency: shard.Linearizable})
	if err != nil {
		return nil, consoleErr(err)
	}
	ns := namespace.From(r.Context())
	views := []triggerView{}
	for _, tr := range trs {
		if _, ok := namespace.StripName(ns, tr.Name); ok {
			views = append(views, c.s.triggerStatus(r.Context(), tr, false))
		}
	}
	// Through the API's JSON, so the page shows what GET /v1/triggers
	// answers.
	b, err := json.Marshal(views)
	if err != nil {
		return nil, consoleErr(err)
	}
	var out []console.TriggerStatus
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, consoleErr(err)
	}
	return out, nil
}

func (c consoleTriggers) DeadLetters(r *http.Request, name string) ([]changefeed.DeadLetter, error) {
	if err := check(r, policies["trigger_dead"]); err != nil {
		return nil, err
	}
	sn, err := stored(r, name)
	if err != nil {
		return nil, err
	}
	dl, err := c.s.triggers.DeadLetters(r.Context(), sn)
	if err != nil {
		return nil, consoleErr(err)
	}
	ns := namespace.From(r.Context())
	for i := range dl {
		dl[i].Key, _ = namespace.Strip(ns, dl[i].Key)
	}
	return dl, nil
}

func (c consoleTriggers) Replay(r *http.Request, name, id string) ([]changefeed.ReplayResult, error) {
	if err := check(r, policies["trigger_dead_replay"]); err != nil {
		return nil, err
	}
	sn, err := stored(r, name)
	if err != nil {
		return nil, err
	}
	var res []changefeed.ReplayResult
	if id == "" {
		res, err = c.s.triggers.ReplayDeadLetters(r.Context(), sn)
	} else {
		var x changefeed.ReplayResult
		x, err = c.s.triggers.ReplayDeadLetter(r.Context(), sn, id)
		res = []changefeed.ReplayResult{x}
	}
	if err != nil {
		return nil, consoleErr(err)
	}
	for i := range res {
		res[i] = userReplay(r.Context(), res[i])
	}
	return res, nil
}

func (c consoleTriggers) Drop(r *http.Request, name, id string) error {
	if err := check(r, policies["trigger_dead_drop"]); err != nil {
		return err
	}
	sn, err := stored(r, name)
	if err != nil {
		return err
	}
	return consoleErr(c.s.triggers.DropDeadLetter(r.Context(), sn, id))
}

func (c consoleTriggers) Pause(r *http.Request, name string) error {
	if err := check(r, policies["trigger_pause"]); err != nil {
		return err
	}
	sn, err := stored(r, name)
	if err != nil {
		return err
	}
	_, err = c.s.triggers.Pause(r.Context(), sn)
	return consoleErr(err)
}

func (c consoleTriggers) Resume(r *http.Request, name string) error {
	if err := check(r, policies["trigger_resume"]); err != nil {
		return err
	}
	sn, err := stored(r, name)
	if err != nil {
		return err
	}
	_, err = c.s.triggers.Resume(r.Context(), sn, changefeed.ResumeCheckpoint)
	return consoleErr(err)
}

// consoleQuery runs a query page's body as POST /v1/query: the query
// route's policy for the principal, then its handler.
func (s *Server) consoleQuery(r *http.Request, body []byte) (int, []byte) {
	req := r.Clone(r.Context())
	req.Method, req.URL, req.RequestURI = http.MethodPost, &url.URL{Path: "/v1/query"}, ""
	req.Header = http.Header{"Content-Type": {"application/json"}}
	req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	w := &bufferedResponse{header: http.Header{}}
	if p := principalOf(r.Context()); p != nil {
		if err := policies["query"](req, p); err != nil {
			s.writeError(w, req, err)
			return w.status, w.body.Bytes()
		}
	}
	s.runQuery(w, req)
	return w.status, w.body.Bytes()
}

// bufferedResponse keeps an answer in memory.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}
