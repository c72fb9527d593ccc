package server

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"lambdadb/internal/session"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// keyPrefix is the path prefix of the single-key routes.
const keyPrefix = "/v1/kv/"

// LeaderHeader names, on a response to a request for one key, the address
// of the key's shard leader as the answering node knows it: clients that
// send keyed requests straight to the leader save the node a forwarding hop.
const LeaderHeader = "X-Shard-Leader"

// hintLeader sets LeaderHeader for key.
func (s *Server) hintLeader(w http.ResponseWriter, key string) {
	if addr := s.node.LeaderAddr(shard.For(key, s.node.Shards())); addr != "" {
		w.Header().Set(LeaderHeader, addr)
	}
}

// writeArgs parses what PUT and DELETE share: the session, the key and
// the preconditions (If-None-Match only when allowNoneMatch). On bad input
// it answers the request and returns ok=false.
func (s *Server) writeArgs(w http.ResponseWriter, r *http.Request, allowNoneMatch bool) (tok session.Token, key string, cond shard.Cond, ok bool) {
	tok, _, err := requestSession(r)
	if err != nil {
		s.fail(w, r, nil, err)
		return nil, "", cond, false
	}
	if key, err = pathKey(r); err != nil {
		s.fail(w, r, tok, err)
		return nil, "", cond, false
	}
	key = namespace.Key(namespace.From(r.Context()), key)
	s.hintLeader(w, key)
	if _, err = queryParams(r); err != nil { // PUT and DELETE take none
		s.fail(w, r, tok, err)
		return nil, "", cond, false
	}
	if cond, err = parseCond(r.Header, allowNoneMatch); err != nil {
		s.fail(w, r, tok, err)
		return nil, "", cond, false
	}
	return tok, key, cond, true
}

// putKey serves PUT /v1/kv/{key...}.
func (s *Server) putKey(w http.ResponseWriter, r *http.Request) {
	tok, key, cond, ok := s.writeArgs(w, r, true)
	if !ok {
		return
	}
	// Read the whole body before writing anything: a body that ends early
	// must not store a truncated value.
	value, err := s.readValue(w, r)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	res, err := s.node.Put(r.Context(), key, value, cond, tok)
	if err != nil {
		s.fail(w, r, tok.Merge(res.Session), err)
		return
	}
	setSession(w, merged(res.Session, tok))
	w.Header().Set("ETag", formatETag(res.Version))
	writeJSON(w, http.StatusOK, struct {
		Version uint64 `json:"version"`
	}{res.Version})
}

// getKey serves GET /v1/kv/{key...}.
func (s *Server) getKey(w http.ResponseWriter, r *http.Request) {
	tok, sent, err := requestSession(r)
	if err != nil {
		s.fail(w, r, nil, err)
		return
	}
	user, err := pathKey(r)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	key := namespace.Key(namespace.From(r.Context()), user)
	s.hintLeader(w, key)
	q, err := queryParams(r, "consistency")
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	ro, err := readOptions(q, tok, sent)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	res, err := s.node.Get(r.Context(), key, ro)
	if err != nil {
		s.fail(w, r, tok.Merge(res.Session), err)
		return
	}
	out := merged(res.Session, tok)
	if !res.Found {
		s.fail(w, r, out, fmt.Errorf("%w: key %q", errNotFound, user))
		return
	}
	setSession(w, out)
	h := w.Header()
	h.Set("ETag", formatETag(res.Record.Version))
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(res.Record.Value)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.Record.Value)
}

// deleteKey serves DELETE /v1/kv/{key...}.
func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) {
	tok, key, cond, ok := s.writeArgs(w, r, false)
	if !ok {
		return
	}
	res, err := s.node.Delete(r.Context(), key, cond, tok)
	if err != nil {
		s.fail(w, r, tok.Merge(res.Session), err)
		return
	}
	setSession(w, merged(res.Session, tok))
	writeJSON(w, http.StatusOK, struct {
		Deleted bool `json:"deleted"`
	}{res.Deleted})
}

// scanItem is one item of a scan response; Value marshals as base64.
type scanItem struct {
	Key     string `json:"key"`
	Value   []byte `json:"value"`
	Version uint64 `json:"version"`
}

type scanResponse struct {
	Items []scanItem `json:"items"`
	Next  *string    `json:"next"`
}

// scan serves GET /v1/kv?prefix=P&start=K&end=K&limit=N&consistency=C.
func (s *Server) scan(w http.ResponseWriter, r *http.Request) {
	tok, sent, err := requestSession(r)
	if err != nil {
		s.fail(w, r, nil, err)
		return
	}
	q, err := queryParams(r, "prefix", "start", "end", "limit", "consistency")
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	ns := namespace.From(r.Context())
	prefix, start, end := q.Get("prefix"), q.Get("start"), q.Get("end")
	for _, p := range []string{prefix, start, end} {
		if err := namespace.ValidatePrefix(p); err != nil {
			s.fail(w, r, tok, fmt.Errorf("%w: %v", shard.ErrInvalidScan, err))
			return
		}
	}
	// The scan's stored bounds stay inside the namespace whatever the
	// user bounds are; Prefix keeps its stored form so a prefix holding
	// a {hash tag} still reads one shard.
	lo, hi := namespace.Range(ns, prefix, start, end)
	req := shard.ScanRequest{Prefix: namespace.Prefix(ns, prefix), Start: lo, End: hi}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			s.fail(w, r, tok, fmt.Errorf("%w: limit %q is not a positive integer", shard.ErrInvalidScan, v))
			return
		}
		req.Limit = n
	}
	ro, err := readOptions(q, tok, sent)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	res, err := s.node.Scan(r.Context(), req, ro)
	if err != nil {
		s.fail(w, r, tok.Merge(res.Session), err)
		return
	}
	out := scanResponse{Items: make([]scanItem, 0, len(res.Items))}
	for _, rec := range res.Items {
		k, ok := namespace.Strip(ns, rec.Key)
		if !ok { // never: the bounds keep the scan inside the namespace
			continue
		}
		out.Items = append(out.Items, scanItem{Key: k, Value: rec.Value, Version: rec.Version})
	}
	if res.More {
		if next, ok := namespace.Strip(ns, res.Next); ok {
			out.Next = &next
		}
	}
	setSession(w, merged(res.Session, tok))
	writeJSON(w, http.StatusOK, out)
}

// fail writes err with tok as the response's session.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, tok session.Token, err error) {
	setSession(w, tok)
	s.writeError(w, r, err)
}

// readValue reads the whole PUT body, bounded by the configured maximum.
func (s *Server) readValue(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return readBody(w, r, int64(s.maxValue), shard.ErrValueTooLarge)
}

// requestSession decodes the request's X-Session headers (several are
// merged) and reports whether a non-empty token was sent.
func requestSession(r *http.Request) (tok session.Token, sent bool, err error) {
	for _, v := range r.Header.Values(session.Header) {
		t, err := session.Decode(v)
		if err != nil {
			return nil, false, fmt.Errorf("server: %s header: %w", session.Header, err)
		}
		if v != "" {
			sent = true
		}
		if tok == nil {
			tok = t
		} else {
			tok = tok.Merge(t)
		}
	}
	return tok, sent, nil
}

// setSession sets the response's X-Session header (empty for no token).
func setSession(w http.ResponseWriter, tok session.Token) {
	w.Header()[session.Header] = []string{tok.Encode()}
}

// merged returns res merged with req, allocating only when res lacks
// something req has.
func merged(res, req session.Token) session.Token {
	if res.Covers(req) {
		return res
	}
	return res.Merge(req)
}

// readOptions builds the read options from the consistency parameter; by
// default a request that sent a session token reads at session
// consistency, any other at linearizable.
func readOptions(q url.Values, tok session.Token, sent bool) (shard.ReadOptions, error) {
	ro := shard.ReadOptions{Consistency: shard.Linearizable, Session: tok}
	if sent {
		ro.Consistency = shard.Session
	}
	if v, ok := q["consistency"]; ok {
		if len(v) != 1 {
			return ro, fmt.Errorf("%w: consistency given %d times", shard.ErrBadConsistency, len(v))
		}
		c, err := shard.ParseConsistency(v[0])
		if err != nil {
			return ro, err
		}
		ro.Consistency = c
	}
	return ro, nil
}

// pathKey returns the request's key: the escaped path after "/v1/kv/",
// percent-decoded once (so "%2F" is a "/" within the key).
func pathKey(r *http.Request) (string, error) {
	raw := strings.TrimPrefix(r.URL.EscapedPath(), keyPrefix)
	key, err := url.PathUnescape(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %w", shard.ErrInvalidKey, err)
	}
	if err := shard.ValidateKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// isKeyPath reports whether the escaped path addresses a single key.
func isKeyPath(p string) bool { return strings.HasPrefix(p, keyPrefix) }

// isCleanPath reports whether http.ServeMux would route p unchanged rather
// than redirect to a cleaned path (same rules as net/http's cleanPath).
func isCleanPath(p string) bool {
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np == p
}

// parseCond parses If-Match (PUT and DELETE) and If-None-Match (PUT only).
func parseCond(h http.Header, allowNoneMatch bool) (shard.Cond, error) {
	var cond shard.Cond
	if vs := h.Values("If-Match"); len(vs) > 0 {
		if len(vs) > 1 {
			return cond, fmt.Errorf("%w: If-Match: want one \"N\", got %d headers", errBadPrecondition, len(vs))
		}
		v, err := parseETag(vs[0])
		if err != nil {
			return cond, fmt.Errorf("%w: If-Match: %w", errBadPrecondition, err)
		}
		cond.IfMatch = &v
	}
	if vs := h.Values("If-None-Match"); len(vs) > 0 {
		switch {
		case !allowNoneMatch:
			return cond, fmt.Errorf("%w: If-None-Match is supported on PUT only", errBadPrecondition)
		case len(vs) > 1 || vs[0] != "*":
			return cond, fmt.Errorf("%w: If-None-Match: only * is supported", errBadPrecondition)
		case cond.IfMatch != nil:
			return cond, fmt.Errorf("%w: If-Match and If-None-Match exclude each other", errBadPrecondition)
		}
		cond.IfNoneMatch = true
	}
	return cond, nil
}

// formatETag returns the strong entity tag of a version: "N".
func formatETag(version uint64) string {
	return `"` + strconv.FormatUint(version, 10) + `"`
}

// parseETag parses a strong entity tag "N" with N a positive decimal
// integer. Weak tags (W/"N"), lists and * are rejected.
func parseETag(s string) (uint64, error) {
	if len(s) < 3 || s[0] != '"' || s[len(s)-1] != '"' {
		return 0, fmt.Errorf("%q is not a quoted version \"N\"", s)
	}
	digits := s[1 : len(s)-1]
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, fmt.Errorf("%q is not a quoted version \"N\"", s)
		}
	}
	v, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%q is not a positive version", s)
	}
	return v, nil
}
