package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"lambdadb/lambda"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// Headers of invocation responses (DESIGN §4) and of forwarded requests.
const (
	headerStart       = "X-Start"
	headerDurationUS  = "X-Duration-Us"
	headerBilledMS    = "X-Billed-Ms"
	headerNode        = "X-Node"
	headerStartUS     = "X-Start-Us"
	headerGBSeconds   = "X-Gb-Seconds"
	headerKVCalls     = "X-Kv-Calls"
	headerKVBytes     = "X-Kv-Bytes"
	headerFunctionVer = "X-Function-Version"
	// headerForwarded marks an invocation another node placed here: it
	// runs locally, whatever this node would have chosen.
	headerForwarded = "X-Lambdadb-Forwarded"
)

// functionView is a function's config and stats as the API shows them.
type functionView struct {
	*lambda.Function
	lambda.Stats
	// Nodes holds each node's own stats (cluster-wide views only); a
	// node that did not answer has Error set.
	Nodes map[string]*nodeStats `json:"nodes,omitempty"`
}

// storedName returns the registry name of the function the request names
// in its path (a name of the request's namespace), and its user name.
func storedName(r *http.Request) (stored, name string, err error) {
	name = r.PathValue("name")
	if err := lambda.ValidateName(name); err != nil {
		return "", name, err
	}
	return namespace.Name(namespace.From(r.Context()), name), name, nil
}

// userFunction returns f as its namespace's users see it: its user name.
func userFunction(f *lambda.Function) *lambda.Function {
	if f == nil {
		return nil
	}
	_, name := namespace.SplitName(f.Name)
	if name == f.Name {
		return f
	}
	c := *f
	c.Name = name
	return &c
}

type nodeStats struct {
	*lambda.Stats
	Error string `json:"error,omitempty"`
}

func (s *Server) deployFunction(w http.ResponseWriter, r *http.Request) {
	tok, _, err := requestSession(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	stored, _, nameErr := storedName(r)
	q, err := queryParams(r, "memory_mb", "timeout_ms", "max_instances")
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	var o lambda.DeployOptions
	for _, p := range []struct {
		name string
		dst  *int
	}{{"memory_mb", &o.MemoryMB}, {"timeout_ms", &o.TimeoutMS}, {"max_instances", &o.MaxInstances}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				s.fail(w, r, tok, fmt.Errorf("%w: %s=%q is not a positive integer", lambda.ErrInvalidConfig, p.name, v))
				return
			}
			*p.dst = n
		}
	}
	if nameErr != nil {
		s.fail(w, r, tok, nameErr)
		return
	}
	module, err := readBody(w, r, lambda.MaxModuleBytes, lambda.ErrModuleTooLarge)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	res, err := s.fns.Deploy(r.Context(), stored, module, o, tok)
	setSession(w, merged(res.Session, tok))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Every member compiles the new version now, not at its first call.
	if ids := s.announceDeploy(r.Context(), res.Function, merged(res.Session, tok)); len(ids) > 0 {
		w.Header().Set(headerCompiledOn, compiledOn(ids))
	}
	writeJSON(w, http.StatusCreated, userFunction(res.Function))
}

func (s *Server) listFunctions(w http.ResponseWriter, r *http.Request) {
	local, err := s.scopeParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out, err := s.namespaceFunctions(r.Context(), local)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Functions []functionView `json:"functions"`
	}{out})
}

// namespaceFunctions returns the functions of the context's namespace
// with their stats: this node's (local) or merged over the cluster.
func (s *Server) namespaceFunctions(ctx context.Context, local bool) ([]functionView, error) {
	all, err := s.fns.List(ctx)
	if err != nil {
		return nil, err
	}
	ns := namespace.From(ctx)
	var fns []*lambda.Function
	for _, f := range all {
		if _, ok := namespace.StripName(ns, f.Name); ok {
			fns = append(fns, f)
		}
	}
	out := make([]functionView, len(fns))
	var wg sync.WaitGroup
	for i, f := range fns {
		out[i].Function = userFunction(f)
		if local {
			out[i].Stats = s.fns.Stats(f)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].Stats, out[i].Nodes = s.clusterStats(ctx, f)
		}()
	}
	wg.Wait()
	return out, nil
}

func (s *Server) getFunction(w http.ResponseWriter, r *http.Request) {
	local, err := s.scopeParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	stored, _, err := storedName(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := s.fns.Get(r.Context(), stored)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := functionView{Function: userFunction(f)}
	if local {
		v.Stats = s.fns.Stats(f)
	} else {
		v.Stats, v.Nodes = s.clusterStats(r.Context(), f)
	}
	writeJSON(w, http.StatusOK, v)
}

// scopeParam parses the query of a route whose only parameter is scope
// (scope=node: the receiving node's view only).
func (s *Server) scopeParam(r *http.Request) (bool, error) {
	q, err := queryParams(r, "scope")
	if err != nil {
		return false, err
	}
	return scopeNode(q)
}

// clusterStats merges the function's stats over every node that answers.
func (s *Server) clusterStats(ctx context.Context, f *lambda.Function) (lambda.Stats, map[string]*nodeStats) {
	per := map[string]*nodeStats{}
	var mu sync.Mutex
	s.fanOut(ctx, func(ctx context.Context, p shard.PeerState, self bool) {
		ns := &nodeStats{}
		if self {
			st := s.fns.Stats(f)
			ns.Stats = &st
		} else {
			var v functionView
			// The peer serves its public API: it takes the user name.
			_, name := namespace.SplitName(f.Name)
			if err := s.peerGet(ctx, p.Addr, "/v1/functions/"+url.PathEscape(name)+"?scope=node", &v); err != nil {
				ns.Error = err.Error()
			} else {
				ns.Stats = &v.Stats
			}
		}
		mu.Lock()
		per[p.ID] = ns
		mu.Unlock()
	})
	var total lambda.Stats
	for _, ns := range per {
		if ns.Stats != nil {
			total.Merge(*ns.Stats)
		}
	}
	total.Merge(lambda.Stats{}) // percentiles even when empty
	return total, per
}

// fanOut calls fn for every member this node sees up, concurrently.
func (s *Server) fanOut(ctx context.Context, fn func(ctx context.Context, p shard.PeerState, self bool)) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range s.node.Peers() {
		if !p.Up {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(ctx, p, p.ID == s.node.ID())
		}()
	}
	wg.Wait()
}

func (s *Server) peerGet(ctx context.Context, addr, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.peerScheme+"://"+addr+path, nil)
	if err != nil {
		return err
	}
	setCaller(ctx, req)
	resp, err := s.peers.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d: %s", addr, resp.StatusCode, bytes.TrimSpace(body))
	}
	return json.Unmarshal(body, v)
}

func (s *Server) deleteFunction(w http.ResponseWriter, r *http.Request) {
	tok, _, err := requestSession(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := queryParams(r); err != nil {
		s.fail(w, r, tok, err)
		return
	}
	stored, _, err := storedName(r)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	tok2, err := s.fns.Remove(r.Context(), stored, tok)
	setSession(w, merged(tok2, tok))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Deleted bool `json:"deleted"`
	}{true})
}

func (s *Server) functionLogs(w http.ResponseWriter, r *http.Request) {
	local, err := s.scopeParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	stored, name, err := storedName(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var lines []lambda.LogLine
	if local {
		lines = s.fns.Logs(stored)
	} else {
		lines = s.clusterLogs(r.Context(), stored, name)
	}
	if lines == nil {
		lines = []lambda.LogLine{}
	}
	writeJSON(w, http.StatusOK, struct {
		Lines []lambda.LogLine `json:"lines"`
	}{lines})
}

// clusterLogs returns the function's recent log lines on every node that
// answers, oldest first; stored and name are its stored and user names.
func (s *Server) clusterLogs(ctx context.Context, stored, name string) []lambda.LogLine {
	var lines []lambda.LogLine
	var mu sync.Mutex
	s.fanOut(ctx, func(ctx context.Context, p shard.PeerState, self bool) {
		var got []lambda.LogLine
		if self {
			got = s.fns.Logs(stored)
		} else {
			var v struct {
				Lines []lambda.LogLine `json:"lines"`
			}
			if err := s.peerGet(ctx, p.Addr, "/v1/functions/"+url.PathEscape(name)+"/logs?scope=node", &v); err != nil {
				return
			}
			got = v.Lines
		}
		mu.Lock()
		lines = append(lines, got...)
		mu.Unlock()
	})
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].Time.Before(lines[j].Time) })
	return lines
}

// seriesView is a function's series as GET /v1/functions/{name}/series
// answers it.
type seriesView struct {
	IntervalMS int64          `json:"interval_ms"`
	Points     []lambda.Point `json:"points"`
	// Errors holds, by node, why a node's series is missing (cluster-wide
	// views only).
	Errors map[string]string `json:"errors,omitempty"`
}

// functionSeries answers the function's activity over time: this node's
// samples (scope=node) or every node's merged by interval.
func (s *Server) functionSeries(w http.ResponseWriter, r *http.Request) {
	local, err := s.scopeParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	stored, name, err := storedName(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := s.fns.Get(r.Context(), stored); err != nil {
		s.writeError(w, r, err)
		return
	}
	var v seriesView
	if local {
		v = seriesView{IntervalMS: s.fns.SampleInterval().Milliseconds(), Points: s.fns.Series(stored)}
	} else {
		v = s.clusterSeries(r.Context(), stored, name)
	}
	writeJSON(w, http.StatusOK, v)
}

// clusterSeries merges the function's series over every node that
// answers (lambda.MergeSeries: points of one interval add up).
func (s *Server) clusterSeries(ctx context.Context, stored, name string) seriesView {
	var mu sync.Mutex
	var all [][]lambda.Point
	v := seriesView{IntervalMS: s.fns.SampleInterval().Milliseconds()}
	s.fanOut(ctx, func(ctx context.Context, p shard.PeerState, self bool) {
		var got seriesView
		if self {
			got.Points = s.fns.Series(stored)
		} else if err := s.peerGet(ctx, p.Addr, "/v1/functions/"+url.PathEscape(name)+"/series?scope=node", &got); err != nil {
			mu.Lock()
			if v.Errors == nil {
				v.Errors = map[string]string{}
			}
			v.Errors[p.ID] = err.Error()
			mu.Unlock()
			return
		}
		mu.Lock()
		all = append(all, got.Points)
		mu.Unlock()
	})
	v.Points = lambda.MergeSeries(all...)
	return v
}

func (s *Server) invokeFunction(w http.ResponseWriter, r *http.Request) {
	tok, _, err := requestSession(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	name, _, err := storedName(r)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	q, err := queryParams(r, "key", "consistency", "placement")
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	key := q.Get("key")
	// A handler's reads default to session consistency, covering the
	// caller's token and the handler's own writes.
	ro, err := readOptions(q, tok, true)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	if _, ok := q["key"]; ok {
		if err := shard.ValidateKey(key); err != nil {
			s.fail(w, r, tok, err)
			return
		}
	}
	switch p := q.Get("placement"); p {
	case "", "leader", "replica":
	default:
		s.fail(w, r, tok, fmt.Errorf("%w: placement=%q (want leader or replica)", errBadParameter, p))
		return
	}
	body, err := readBody(w, r, lambda.MaxMessageBytes, lambda.ErrRequestTooLarge)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	if r.Header.Get(headerForwarded) == "" {
		// The node placed by the key's stored form; a forwarded request
		// carries the user's name and key, which the target maps again
		// in the namespace it derives for the request.
		routed := key
		if routed != "" {
			routed = namespace.Key(namespace.From(r.Context()), key)
		}
		if addr := s.placement(name, routed, q.Get("placement")); addr != "" {
			if s.forwardInvoke(w, r, addr, body) {
				return
			}
			// The chosen node could not be sent the request: run here; the
			// handler's KV calls are forwarded as any other.
		}
	}
	res, err := s.fns.Invoke(r.Context(), lambda.Invocation{
		Name: name, Body: body, Key: key, Session: tok, Consistency: ro.Consistency,
	})
	h := w.Header()
	h.Set(headerNode, res.Node)
	if res.Start != "" {
		h.Set(headerStart, res.Start)
		h.Set(headerStartUS, strconv.FormatInt(res.StartTime.Microseconds(), 10))
		h.Set(headerDurationUS, strconv.FormatInt(res.Duration.Microseconds(), 10))
		h.Set(headerBilledMS, strconv.FormatInt(res.BilledMS, 10))
		h.Set(headerGBSeconds, strconv.FormatFloat(res.GBSeconds, 'g', 6, 64))
		h.Set(headerKVCalls, strconv.Itoa(res.KVCalls))
		h.Set(headerKVBytes, strconv.FormatInt(res.KVBytes, 10))
	}
	if res.Function != nil {
		h.Set(headerFunctionVer, strconv.FormatUint(res.Function.Version, 10))
	}
	setSession(w, merged(res.Session, tok))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h.Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.Body)
}

// placement returns the address of the node that should run an
// invocation, or "" to run it here. With a key: the leader of the key's
// shard (placement=replica: any replica, this one first). Without: this
// node if it has a paused sandbox, else a node that has one.
func (s *Server) placement(name, key, mode string) string {
	self := s.node.ID()
	if key != "" {
		_, leader, replicas := s.node.Route(key)
		if mode == "replica" {
			for _, p := range replicas {
				if p.ID == self {
					return ""
				}
			}
		}
		if leader.ID == "" || leader.ID == self {
			return ""
		}
		return leader.Addr
	}
	if s.fns.HasPaused(name) {
		return ""
	}
	for _, p := range s.node.Peers() {
		if p.ID != self && p.Up && lambda.PausedIn(p.Info, name) {
			return p.Addr
		}
	}
	return ""
}

// forwardTimeout bounds a forwarded invocation: longer than any function's
// timeout plus its queue wait and sandbox start.
const forwardTimeout = 16 * time.Minute

// errOutcomeUnknown is a forwarded invocation that was sent but not
// answered: the handler may or may not have run.
var errOutcomeUnknown = fmt.Errorf("%w: the invocation was forwarded but not answered; it may or may not have run", shard.ErrUnavailable)

// forwardInvoke relays the invocation to addr and copies its answer back.
// It returns false, having written nothing, only when the request was
// never sent (so running it here cannot run it twice).
func (s *Server) forwardInvoke(w http.ResponseWriter, r *http.Request, addr string, body []byte) bool {
	ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
	defer cancel()
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteHeaders: func() { wrote.Store(true) },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.peerScheme+"://"+addr+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return false
	}
	// Every header goes along, the caller's Authorization among them: the
	// node that runs the invocation checks it as this one would.
	req.Header = r.Header.Clone()
	req.Header.Set(headerForwarded, s.node.ID())
	resp, err := s.peers.Do(req)
	if err != nil {
		if !wrote.Load() {
			s.log.Debug("could not forward an invocation; running it here", "to", addr, "err", err)
			return false
		}
		tok, _, _ := requestSession(r)
		s.fail(w, r, tok, fmt.Errorf("%w (%s: %v)", errOutcomeUnknown, addr, err))
		return true
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	return true
}

// readBody reads a whole request body of at most limit bytes; a larger
// one fails with tooLarge (by Content-Length, before reading, or as read).
func readBody(w http.ResponseWriter, r *http.Request, limit int64, tooLarge error) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", tooLarge, r.ContentLength, limit)
	}
	size := int64(512)
	if r.ContentLength >= 0 {
		size = r.ContentLength
	}
	// One spare byte lets the final Read report EOF without growing.
	buf := make([]byte, 0, size+1)
	body := http.MaxBytesReader(w, r.Body, limit)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			if _, ok := err.(*http.MaxBytesError); ok {
				// Only tooLarge decides the status (not the MaxBytesError).
				return nil, fmt.Errorf("%w: limit %d bytes: %v", tooLarge, limit, err)
			}
			return nil, fmt.Errorf("%w: %w", errBadBody, err)
		}
	}
}
