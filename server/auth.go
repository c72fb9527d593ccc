package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"lambdadb/auth"
	"lambdadb/namespace"
)

// Authorization: one place decides who may do what.
//
// In secure mode (Config.Auth set) every route goes through authorize:
// the request's token (Authorization: Bearer, or for a WebSocket the
// Sec-WebSocket-Protocol entry "lambdadb.bearer.<token>") is checked, the
// request's namespace chosen, and the route's policy — looked up by its
// name in policies — consulted. A route without a policy is denied; a
// test fails when a route is added without one. Policies that depend on a
// request body (triggers, queries) read it here, bounded by the route's
// body limit, and hand it on to the handler unchanged.
//
// Without Config.Auth (insecure mode) everything is allowed and lives in
// namespace Default.

var (
	errSecureModeOff = errors.New("server: tokens are not used: this node runs in insecure mode (start it with --cluster-secret-file)")
	errNamespaceOff  = errors.New("server: X-Namespace needs secure mode: in insecure mode everything lives in namespace default")
)

// policy decides whether p may make request r; nil means yes. Its error
// says what is missing (wrapping auth.ErrForbidden).
type policy func(r *http.Request, p *auth.Principal) error

// public marks routes that need no token.
var public policy = func(*http.Request, *auth.Principal) error { return nil }

// authenticated lets any valid token through.
var authenticated policy = func(*http.Request, *auth.Principal) error { return nil }

func need(action string) policy {
	return func(_ *http.Request, p *auth.Principal) error {
		if p.Allows(action, "") {
			return nil
		}
		return forbidden("needs scope %s", action)
	}
}

// needAll needs every one of actions.
func needAll(actions ...string) policy {
	return func(_ *http.Request, p *auth.Principal) error {
		for _, a := range actions {
			if !p.Allows(a, "") {
				return forbidden("needs scope %s", a)
			}
		}
		return nil
	}
}

func needAny(actions ...string) policy {
	return func(_ *http.Request, p *auth.Principal) error {
		if p.AllowsAny(actions...) {
			return nil
		}
		return forbidden("needs one of the scopes %s", strings.Join(actions, ", "))
	}
}

// onKey needs action on the request's key.
func onKey(action string) policy {
	return func(r *http.Request, p *auth.Principal) error {
		key, err := pathKey(r)
		if err != nil {
			return nil // the handler answers 400; nothing is read or written
		}
		if p.Allows(action, key) {
			return nil
		}
		return forbidden("needs scope %s on key %q", action, key)
	}
}

// onScan needs kv:read over the whole range a scan may read.
func onScan(r *http.Request, p *auth.Principal) error {
	q := r.URL.Query()
	if rangeAllowed(p, auth.KVRead, q.Get("prefix"), q.Get("start"), q.Get("end")) {
		return nil
	}
	return forbidden("needs scope kv:read covering prefix %q", q.Get("prefix"))
}

// rangeAllowed reports whether action is granted on every key with prefix
// that is ≥ start and < end (end "" = no bound).
func rangeAllowed(p *auth.Principal, action, prefix, start, end string) bool {
	if p.Allows(action, prefix) {
		return true
	}
	// A narrower grant still covers a range that starts and ends inside
	// one of its prefixes.
	for _, s := range p.Scopes {
		if s.Action != action || s.Prefix == "*" || !strings.HasPrefix(start, s.Prefix) || end == "" {
			continue
		}
		// The scan reads within [max(start, prefix), end) ⊆ [start, end of S).
		if pe := namespace.PrefixEnd(s.Prefix); pe == "" || end <= pe {
			return true
		}
	}
	return false
}

func onFeed(r *http.Request, p *auth.Principal) error {
	prefix := r.URL.Query().Get("prefix")
	if p.Allows(auth.FeedRead, prefix) {
		return nil
	}
	return forbidden("needs scope feed:read covering prefix %q", prefix)
}

// onQuery needs query, kv:read over the queried prefix and, for a
// function's query, fn:invoke: a query reads the data it aggregates.
func onQuery(r *http.Request, p *auth.Principal) error {
	var q struct {
		Prefix   string `json:"prefix"`
		Function string `json:"function"`
	}
	if err := peekJSON(r, &q); err != nil {
		return err
	}
	switch {
	case !p.Allows(auth.Query, ""):
		return forbidden("needs scope query")
	case !p.Allows(auth.KVRead, q.Prefix):
		return forbidden("a query reads what it aggregates: needs scope kv:read covering prefix %q", q.Prefix)
	case q.Function != "" && !p.Allows(auth.FnInvoke, ""):
		return forbidden("a query with a function runs it: needs scope fn:invoke")
	}
	return nil
}

// onTriggerPut: defining a trigger delivers changes to a function, so it
// needs what reading those changes and invoking that function need.
func onTriggerPut(r *http.Request, p *auth.Principal) error {
	var t struct {
		Prefix string `json:"prefix"`
	}
	if err := peekJSON(r, &t); err != nil {
		return err
	}
	switch {
	case !p.Allows(auth.TriggerAdmin, ""):
		return forbidden("needs scope trigger:admin")
	case !p.Allows(auth.FeedRead, t.Prefix):
		return forbidden("a trigger reads the changes under its prefix: needs scope feed:read covering %q", t.Prefix)
	case !p.Allows(auth.FnInvoke, ""):
		return forbidden("a trigger invokes its function: needs scope fn:invoke")
	}
	return nil
}

// peekJSON decodes the request body into v and puts the body back for the
// handler. A body that does not decode is left to the handler to refuse;
// v then keeps its zero value, which the policies treat as the widest
// request (the empty prefix).
func peekJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("%w: %w", errBadBody, err)
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	_ = json.Unmarshal(b, v)
	return nil
}

func forbidden(format string, args ...any) error {
	return fmt.Errorf("%w: %s", auth.ErrForbidden, fmt.Sprintf(format, args...))
}

// policies maps every route name (route.name) to who may use it.
var policies = map[string]policy{
	"healthz":        public,
	"auth_bootstrap": public,

	"kv_put":          onKey(auth.KVWrite),
	"kv_delete":       onKey(auth.KVWrite),
	"kv_get":          onKey(auth.KVRead),
	"kv_scan":         onScan,
	"kv_invalid_path": authenticated,
	"feed":            onFeed,
	"query":           onQuery,

	"fn_deploy": need(auth.FnDeploy),
	"fn_delete": need(auth.FnDeploy),
	"fn_invoke": need(auth.FnInvoke),
	"fn_logs":   need(auth.FnLogs),
	"fn_list":   needAny(auth.FnDeploy, auth.FnInvoke, auth.FnLogs),
	"fn_get":    needAny(auth.FnDeploy, auth.FnInvoke, auth.FnLogs),
	"fn_series": needAny(auth.FnDeploy, auth.FnInvoke, auth.FnLogs),

	"trigger_put":    onTriggerPut,
	"trigger_list":   need(auth.TriggerAdmin),
	"trigger_get":    need(auth.TriggerAdmin),
	"trigger_delete": need(auth.TriggerAdmin),
	"trigger_dead":   need(auth.TriggerAdmin),
	"trigger_pause":  need(auth.TriggerAdmin),
	"trigger_resume": need(auth.TriggerAdmin),
	// Replaying a dead letter invokes the trigger's function.
	"trigger_dead_replay": needAll(auth.TriggerAdmin, auth.FnInvoke),
	"trigger_dead_drop":   need(auth.TriggerAdmin),

	// Clients route keyed requests by the cluster's view: any token reads it.
	"cluster":           authenticated,
	"cluster_moves":     authenticated,
	"cluster_rebalance": need(auth.Admin),
	"node_decommission": need(auth.Admin),
	"node_remove":       need(auth.Admin),
	"metrics":           needAny(auth.Metrics, auth.Admin),

	"token_create": need(auth.Admin),
	"token_list":   need(auth.Admin),
	"token_revoke": need(auth.Admin),
	"auth_log":     need(auth.Admin),
	"debug":        need(auth.Admin), // RequireAdmin: /debug/pprof/, /debug/faults

	"ns_quota_put": need(auth.Admin),
	"ns_quota_get": need(auth.Admin),
	"ns_list":      need(auth.Admin),

	// The console's pages show only what the token may see (the key
	// browser its namespace, and prefixes its kv:read scopes cover);
	// its static assets (htmx, uPlot, CSS) are public.
	"console":        authenticated,
	"console_static": public,
	"console_login":  public, // exchanges a token for the console's cookie
	"console_logout": public,
	// The triggers page's buttons (console.TriggerActions): the scopes of
	// the same API actions.
	"console_trigger_replay": needAll(auth.TriggerAdmin, auth.FnInvoke),
	"console_trigger_drop":   need(auth.TriggerAdmin),
	"console_trigger_state":  need(auth.TriggerAdmin),

	"unmatched": authenticated,
}

type principalKey struct{}

// credentialKey holds the request's Authorization value, for the requests
// this node makes to other nodes' public API on the caller's behalf (per
// node views of a function or trigger): each of them authenticates and
// authorizes the caller again. It is never logged.
type credentialKey struct{}

// setCaller gives req, made to another node's public API on behalf of the
// request whose context is ctx, the caller's credential and namespace.
func setCaller(ctx context.Context, req *http.Request) {
	if c, ok := ctx.Value(credentialKey{}).(string); ok {
		req.Header.Set("Authorization", c)
		req.Header.Set("X-Namespace", namespace.From(ctx))
	}
}

// RequireAdmin guards h (operator routes outside the API, such as
// /debug/pprof/) with an admin token in secure mode; in insecure mode it
// returns h.
func (s *Server) RequireAdmin(h http.Handler) http.Handler {
	if s.auth == nil {
		return h
	}
	return s.authorize("debug", h)
}

// principalOf returns the request's principal (nil in insecure mode).
func principalOf(ctx context.Context) *auth.Principal {
	p, _ := ctx.Value(principalKey{}).(*auth.Principal)
	return p
}

// wsTokenProtocol prefixes the Sec-WebSocket-Protocol entry that carries
// a token for browsers, which cannot set Authorization on a WebSocket.
const wsTokenProtocol = "lambdadb.bearer."

// requestToken returns the request's bearer token: from Authorization,
// or for a WebSocket handshake without one, from Sec-WebSocket-Protocol.
// A token in the URL is never looked at.
func requestToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", false
		}
		return strings.TrimSpace(tok), true
	}
	if isWebSocket(r) {
		for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
			for _, p := range strings.Split(v, ",") {
				if t, ok := strings.CutPrefix(strings.TrimSpace(p), wsTokenProtocol); ok {
					return t, true
				}
			}
		}
	}
	return "", false
}

func isWebSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// authorize runs route name's policy in front of h.
func (s *Server) authorize(name string, h http.Handler) http.Handler {
	pol, ok := policies[name]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nsHeader := r.Header.Get("X-Namespace")
		if s.auth == nil {
			if nsHeader != "" && nsHeader != namespace.Default {
				s.writeError(w, r, fmt.Errorf("%w: %w", errBadParameter, errNamespaceOff))
				return
			}
			h.ServeHTTP(w, r)
			return
		}
		if !ok {
			s.deny(w, r, name, nil, forbidden("route %s has no access policy", name))
			return
		}
		if pol == nil || isPublic(name) {
			h.ServeHTTP(w, r)
			return
		}
		tok, sent := requestToken(r)
		if !sent && takesCookie(name) {
			tok, sent = consoleToken(r)
		}
		if !sent {
			s.deny(w, r, name, nil, fmt.Errorf("%w: send Authorization: Bearer <token>", auth.ErrUnauthenticated))
			return
		}
		p, err := s.auth.Authenticate(r.Context(), tok)
		if err != nil {
			if errors.Is(err, auth.ErrUnauthenticated) {
				s.deny(w, r, name, nil, err)
			} else {
				s.writeError(w, r, err)
			}
			return
		}
		ns := p.Namespace
		if nsHeader != "" && nsHeader != ns {
			if err := namespace.Validate(nsHeader); err != nil {
				s.writeError(w, r, fmt.Errorf("%w: X-Namespace: %w", errBadParameter, err))
				return
			}
			if !p.IsAdmin() {
				s.deny(w, r, name, p, forbidden("X-Namespace %q: a token of namespace %q cannot act in another (only admin can)", nsHeader, ns))
				return
			}
			ns = nsHeader
		}
		if err := pol(r, p); err != nil {
			if errors.Is(err, auth.ErrForbidden) {
				s.deny(w, r, name, p, err)
			} else {
				s.writeError(w, r, err)
			}
			return
		}
		ctx := context.WithValue(r.Context(), principalKey{}, p)
		ctx = context.WithValue(ctx, credentialKey{}, "Bearer "+tok)
		h.ServeHTTP(w, r.WithContext(namespace.With(ctx, ns)))
	})
}

// consoleActionRoutes names the route of each console.TriggerActions
// action.
var consoleActionRoutes = map[string]string{
	"replay": "console_trigger_replay",
	"drop":   "console_trigger_drop",
	"pause":  "console_trigger_state",
	"resume": "console_trigger_state",
}

// takesCookie reports whether route name accepts the console's sign-in
// cookie in place of Authorization: the console's pages and buttons only.
func takesCookie(name string) bool {
	return name == "console" || strings.HasPrefix(name, "console_trigger_")
}

func isPublic(name string) bool {
	switch name {
	case "healthz", "auth_bootstrap", "console_static", "console_login", "console_logout":
		return true
	}
	return false
}

// deny answers 401 or 403 and records the denial (by accessor only).
func (s *Server) deny(w http.ResponseWriter, r *http.Request, route string, p *auth.Principal, err error) {
	d := auth.Denial{Time: time.Now().UTC(), Route: route, Reason: err.Error(), Remote: r.RemoteAddr}
	d.Status, _ = errorStatus(err)
	if p != nil {
		d.Accessor, d.Namespace = p.Accessor, p.Namespace
	}
	s.denials.Add(d)
	s.denied.WithLabelValues(route, fmt.Sprint(d.Status)).Inc()
	if d.Status == http.StatusUnauthorized {
		if route == "console" && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
			r.Header.Get("HX-Request") == "" && strings.Contains(r.Header.Get("Accept"), "text/html") {
			// A browser on a console page: to the login form.
			http.Redirect(w, r, loginPath, http.StatusSeeOther)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="lambdadb"`)
	}
	s.writeError(w, r, err)
}

// Token routes.

// secureRoute answers a token or denial-log route that cannot run — the
// node is in insecure mode, or the request has query parameters (these
// routes take none) — and reports whether it may go on.
func (s *Server) secureRoute(w http.ResponseWriter, r *http.Request) bool {
	if s.auth == nil {
		s.writeError(w, r, fmt.Errorf("%w: %w", errBadParameter, errSecureModeOff))
		return false
	}
	if _, err := queryParams(r); err != nil {
		s.writeError(w, r, err)
		return false
	}
	return true
}

func (s *Server) bootstrap(w http.ResponseWriter, r *http.Request) {
	if !s.secureRoute(w, r) {
		return
	}
	is, err := s.auth.Bootstrap(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("cluster bootstrapped: admin token issued", "accessor", is.Accessor, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, tokenBody(is))
}

type issuedBody struct {
	Token     string     `json:"token"`
	Accessor  string     `json:"accessor"`
	Namespace string     `json:"namespace"`
	Scopes    []string   `json:"scopes"`
	Expires   *time.Time `json:"expires"`
}

func tokenBody(is auth.Issued) issuedBody {
	b := issuedBody{Token: string(is.Token), Accessor: is.Accessor, Namespace: is.Namespace, Scopes: is.Scopes}
	if !is.Expires.IsZero() {
		b.Expires = &is.Expires
	}
	return b
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	if !s.secureRoute(w, r) {
		return
	}
	var req struct {
		Namespace string   `json:"namespace"`
		Scopes    []string `json:"scopes"`
		TTLs      int64    `json:"ttl_s"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: want {\"namespace\",\"scopes\":[...],\"ttl_s\"}: %v", auth.ErrInvalid, err))
		return
	}
	if req.TTLs < 0 {
		s.writeError(w, r, fmt.Errorf("%w: ttl_s must not be negative", auth.ErrInvalid))
		return
	}
	is, err := s.auth.Create(r.Context(), req.Namespace, req.Scopes, time.Duration(req.TTLs)*time.Second)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("token created", "accessor", is.Accessor, "namespace", is.Namespace, "scopes", is.Scopes, "by", principalOf(r.Context()).Accessor)
	writeJSON(w, http.StatusCreated, tokenBody(is))
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	if !s.secureRoute(w, r) {
		return
	}
	list, err := s.auth.List(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []auth.Info{}
	}
	writeJSON(w, http.StatusOK, struct {
		Tokens []auth.Info `json:"tokens"`
	}{list})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	if !s.secureRoute(w, r) {
		return
	}
	acc := r.PathValue("accessor")
	unreached, err := s.auth.Revoke(r.Context(), acc)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("token revoked", "accessor", acc, "by", principalOf(r.Context()).Accessor, "unreached", unreached)
	if unreached == nil {
		unreached = []string{}
	}
	writeJSON(w, http.StatusOK, struct {
		Revoked   bool     `json:"revoked"`
		Unreached []string `json:"unreached_nodes"`
	}{true, unreached})
}

func (s *Server) authLog(w http.ResponseWriter, r *http.Request) {
	if !s.secureRoute(w, r) {
		return
	}
	list, total := s.denials.List()
	writeJSON(w, http.StatusOK, struct {
		Node    string        `json:"node"`
		Total   uint64        `json:"total"`
		Denials []auth.Denial `json:"denials"`
	}{s.node.ID(), total, list})
}

// errCrossOrigin is a browser request from a page of another origin.
var errCrossOrigin = errors.New("server: cross-origin request refused")

// crossOrigin refuses state-changing requests that a browser sends on
// behalf of a page of another origin (net/http's CrossOriginProtection:
// Sec-Fetch-Site, else Origin against Host); requests from programs,
// which send neither header, pass. Config.AllowedOrigins are trusted.
func (s *Server) crossOrigin(h http.Handler) http.Handler {
	p := http.NewCrossOriginProtection()
	for o := range s.origins {
		_ = p.AddTrustedOrigin(o) // validated by New
	}
	p.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, fmt.Errorf("%w: %w: a page of origin %q may not change data here", auth.ErrForbidden, errCrossOrigin, r.Header.Get("Origin")))
	}))
	return p.Handler(h)
}

// checkOrigin admits a WebSocket handshake from a program (no Origin), a
// page of the node's own origin, or one of Config.AllowedOrigins: a page
// elsewhere could otherwise read the feed with the browser's network
// position (a node on loopback) or its stored credentials.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if s.origins[strings.ToLower(origin)] {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}
