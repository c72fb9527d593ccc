package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// Node is what a Store needs of the node: replicated System-space records
// and internal RPC to its peers. *shard.Node implements it.
type Node interface {
	ID() string
	GetIn(ctx context.Context, sp shard.Space, key string, ro shard.ReadOptions) (shard.GetResult, error)
	ScanIn(ctx context.Context, sp shard.Space, req shard.ScanRequest, ro shard.ReadOptions) (shard.ScanResult, error)
	Batch(ctx context.Context, ops []shard.Op, tok session.Token) (shard.BatchResult, error)
	Peers() []shard.PeerState
	CallInternal(ctx context.Context, addr, path string, req, resp any) error
	HandleInternal(path string, h http.Handler)
}

// Config configures a Store.
type Config struct {
	// Node holds the records. Required.
	Node Node
	// CacheTTL is how long a node trusts a token record it read without
	// reading it again: the longest a revoked token can still be accepted
	// by a node the revocation could not reach. Default 30s.
	CacheTTL time.Duration
	// NegativeTTL is how long an unknown accessor is remembered as
	// unknown, so a flood of forged tokens does not read the store once
	// each. Default 2s.
	NegativeTTL time.Duration
	// StaleTTL is how long past CacheTTL a node keeps answering with a
	// token record it read while it reads the record again in the
	// background: requests never wait for the store when the token was
	// known, and a node cut off from the token records (their shard has
	// no quorum it can reach) still serves the tokens it knew — an
	// operator can still reach it. A revocation this node was told of
	// drops its copy at once; one it could not be told of (it was cut
	// off) applies when it can read the records again. Past CacheTTL +
	// StaleTTL the request waits for the store. Default 1h; negative:
	// every request past CacheTTL waits for the store.
	StaleTTL time.Duration
	// MaxTTL bounds a token's lifetime; 0: tokens may live for ever.
	MaxTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Record is a token as the store keeps it: never the token itself.
type Record struct {
	Accessor  string   `msgpack:"a" json:"accessor"`
	Hash      []byte   `msgpack:"h" json:"-"`
	Namespace string   `msgpack:"n" json:"namespace"`
	Scopes    []string `msgpack:"s" json:"scopes"`
	Created   int64    `msgpack:"c" json:"-"` // Unix nanoseconds
	Expires   int64    `msgpack:"e" json:"-"` // Unix nanoseconds; 0: never

	// parsed holds Scopes parsed, or why they do not parse: read once when
	// the record is read into the cache, not on every request.
	parsed    []Scope
	parsedErr error
}

// Keys of the records, all under one hash tag (one shard): a bootstrap's
// marker and token commit in one batch.
const (
	keyPrefix    = "auth/{auth}/token/"
	bootstrapKey = "auth/{auth}/bootstrap"
)

// InvalidatePath is the internal RPC route of a revocation's broadcast.
const InvalidatePath = shard.ExtPrefix + "auth/invalidate"

// Store creates, lists, revokes and checks tokens. Create it with New.
type Store struct {
	cfg Config

	mu         sync.Mutex
	cache      map[string]cached
	refreshing map[string]bool // accessors being read again in the background
	gen        uint64          // counts forget calls: a read that raced with one is not cached
}

type cached struct {
	rec *Record // nil: no such token
	at  time.Time
}

// maxCached bounds the cache; past it the cache starts over.
const maxCached = 100_000

// New validates cfg, applies defaults, registers the invalidation route
// on the node and returns a Store.
func New(cfg Config) (*Store, error) {
	if cfg.Node == nil {
		return nil, errors.New("auth: Config.Node is required")
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 30 * time.Second
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.StaleTTL == 0 {
		cfg.StaleTTL = time.Hour
	}
	s := &Store{cfg: cfg, cache: map[string]cached{}, refreshing: map[string]bool{}}
	cfg.Node.HandleInternal(InvalidatePath, http.HandlerFunc(s.serveInvalidate))
	return s, nil
}

// Issued is a token just created: the only time its text is known.
type Issued struct {
	Token     Token
	Accessor  string
	Namespace string
	Scopes    []string
	Expires   time.Time // zero: never
}

// Bootstrap creates the cluster's first admin token. It succeeds once per
// cluster; afterwards it fails with ErrBootstrapped.
func (s *Store) Bootstrap(ctx context.Context) (Issued, error) {
	tok, rec, err := s.newRecord(namespace.Default, []string{Admin}, 0)
	if err != nil {
		return Issued{}, err
	}
	b, err := msgpack.Marshal(rec)
	if err != nil {
		return Issued{}, fmt.Errorf("auth: encode record: %w", err)
	}
	_, err = s.cfg.Node.Batch(ctx, []shard.Op{
		{Space: shard.SystemSpace, Key: bootstrapKey, Value: []byte(rec.Accessor), Cond: shard.Cond{IfNoneMatch: true}},
		{Space: shard.SystemSpace, Key: keyPrefix + rec.Accessor, Value: b},
	}, nil)
	if errors.Is(err, shard.ErrPrecondition) {
		return Issued{}, fmt.Errorf("%w: create tokens with an admin token (POST /v1/tokens)", ErrBootstrapped)
	}
	if err != nil {
		return Issued{}, fmt.Errorf("auth: bootstrap: %w", err)
	}
	return issued(tok, rec), nil
}

// Create issues a token for namespace ns with the given scopes, expiring
// after ttl (0: never, or Config.MaxTTL when set).
func (s *Store) Create(ctx context.Context, ns string, scopes []string, ttl time.Duration) (Issued, error) {
	if ns == "" {
		ns = namespace.Default
	}
	if err := namespace.Validate(ns); err != nil {
		return Issued{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := ParseScopes(scopes); err != nil {
		return Issued{}, err
	}
	if ttl < 0 {
		return Issued{}, fmt.Errorf("%w: negative ttl", ErrInvalid)
	}
	if s.cfg.MaxTTL > 0 && (ttl == 0 || ttl > s.cfg.MaxTTL) {
		ttl = s.cfg.MaxTTL
	}
	tok, rec, err := s.newRecord(ns, scopes, ttl)
	if err != nil {
		return Issued{}, err
	}
	b, err := msgpack.Marshal(rec)
	if err != nil {
		return Issued{}, fmt.Errorf("auth: encode record: %w", err)
	}
	if _, err := s.cfg.Node.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: keyPrefix + rec.Accessor, Value: b,
		Cond: shard.Cond{IfNoneMatch: true}}}, nil); err != nil {
		return Issued{}, fmt.Errorf("auth: create token: %w", err)
	}
	return issued(tok, rec), nil
}

func (s *Store) newRecord(ns string, scopes []string, ttl time.Duration) (Token, *Record, error) {
	tok, acc, err := NewToken()
	if err != nil {
		return "", nil, err
	}
	now := s.cfg.Now()
	rec := &Record{Accessor: acc, Hash: hashToken(string(tok)), Namespace: ns, Scopes: slices.Clone(scopes), Created: now.UnixNano()}
	if ttl > 0 {
		rec.Expires = now.Add(ttl).UnixNano()
	}
	return tok, rec, nil
}

func issued(tok Token, rec *Record) Issued {
	is := Issued{Token: tok, Accessor: rec.Accessor, Namespace: rec.Namespace, Scopes: rec.Scopes}
	if rec.Expires != 0 {
		is.Expires = time.Unix(0, rec.Expires).UTC()
	}
	return is
}

// Info is a token as lists show it: no secret, no hash.
type Info struct {
	Accessor  string     `json:"accessor"`
	Namespace string     `json:"namespace"`
	Scopes    []string   `json:"scopes"`
	Created   time.Time  `json:"created"`
	Expires   *time.Time `json:"expires"`
	Expired   bool       `json:"expired"`
}

// List returns every token, by accessor.
func (s *Store) List(ctx context.Context) ([]Info, error) {
	var out []Info
	start := ""
	for {
		res, err := s.cfg.Node.ScanIn(ctx, shard.SystemSpace, shard.ScanRequest{Prefix: keyPrefix, Start: start, Limit: 1000}, shard.ReadOptions{})
		if err != nil {
			return nil, fmt.Errorf("auth: list tokens: %w", err)
		}
		for _, it := range res.Items {
			var rec Record
			if err := msgpack.Unmarshal(it.Value, &rec); err != nil {
				return nil, fmt.Errorf("auth: decode token record %s: %w", it.Key, err)
			}
			out = append(out, s.info(&rec))
		}
		if !res.More {
			break
		}
		start = res.Next
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Accessor < out[j].Accessor })
	return out, nil
}

func (s *Store) info(rec *Record) Info {
	in := Info{Accessor: rec.Accessor, Namespace: rec.Namespace, Scopes: rec.Scopes, Created: time.Unix(0, rec.Created).UTC()}
	if rec.Expires != 0 {
		e := time.Unix(0, rec.Expires).UTC()
		in.Expires = &e
		in.Expired = !s.cfg.Now().Before(e)
	}
	return in
}

// Revoke deletes the token with accessor acc and tells every reachable
// node to forget it; it returns the nodes that could not be told (they
// forget it within CacheTTL).
func (s *Store) Revoke(ctx context.Context, acc string) (unreached []string, err error) {
	if !validAccessor(acc) {
		return nil, fmt.Errorf("%w: %q is not an accessor", ErrNotFound, acc)
	}
	key := keyPrefix + acc
	res, err := s.cfg.Node.GetIn(ctx, shard.SystemSpace, key, shard.ReadOptions{})
	if err != nil {
		return nil, fmt.Errorf("auth: revoke: %w", err)
	}
	if !res.Found {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, acc)
	}
	if _, err := s.cfg.Node.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: key, Delete: true}}, nil); err != nil {
		return nil, fmt.Errorf("auth: revoke: %w", err)
	}
	s.forget(acc)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range s.cfg.Node.Peers() {
		if p.ID == s.cfg.Node.ID() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var resp struct{}
			if err := s.cfg.Node.CallInternal(cctx, p.Addr, InvalidatePath, invalidateReq{Accessor: acc}, &resp); err != nil {
				mu.Lock()
				unreached = append(unreached, p.ID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Strings(unreached)
	return unreached, nil
}

type invalidateReq struct {
	Accessor string `msgpack:"a"`
}

func (s *Store) serveInvalidate(w http.ResponseWriter, r *http.Request) {
	var req invalidateReq
	if err := msgpack.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	s.forget(req.Accessor)
	w.Header().Set("Content-Type", "application/msgpack")
	b, _ := msgpack.Marshal(struct{}{})
	_, _ = w.Write(b)
}

func (s *Store) forget(acc string) {
	s.mu.Lock()
	delete(s.cache, acc)
	s.gen++
	s.mu.Unlock()
}

// Authenticate checks a token and returns who it acts as. A token that is
// malformed, unknown, revoked or expired fails with ErrUnauthenticated;
// a store that cannot be read fails with its error (not a 401: the token
// may be fine).
func (s *Store) Authenticate(ctx context.Context, tok string) (*Principal, error) {
	acc, err := ParseToken(tok)
	if err != nil {
		return nil, err
	}
	rec, err := s.lookup(ctx, acc)
	if err != nil {
		return nil, err
	}
	if rec == nil || subtle.ConstantTimeCompare(hashToken(tok), rec.Hash) != 1 {
		return nil, fmt.Errorf("%w: unknown or revoked token %s", ErrUnauthenticated, Token(tok))
	}
	if rec.Expires != 0 && !s.cfg.Now().Before(time.Unix(0, rec.Expires)) {
		return nil, fmt.Errorf("%w: token %s expired at %s", ErrUnauthenticated, Token(tok), time.Unix(0, rec.Expires).UTC().Format(time.RFC3339))
	}
	if rec.parsedErr != nil {
		return nil, fmt.Errorf("%w: token %s has a bad record: %v", ErrUnauthenticated, Token(tok), rec.parsedErr)
	}
	return &Principal{Accessor: acc, Namespace: rec.Namespace, Scopes: rec.parsed}, nil
}

func (s *Store) lookup(ctx context.Context, acc string) (*Record, error) {
	now := s.cfg.Now()
	s.mu.Lock()
	c, ok := s.cache[acc]
	gen := s.gen
	s.mu.Unlock()
	if ok {
		ttl := s.cfg.CacheTTL
		if c.rec == nil {
			ttl = s.cfg.NegativeTTL
		}
		if now.Sub(c.at) < ttl {
			return c.rec, nil
		}
	}
	if ok && c.rec != nil && s.cfg.StaleTTL > 0 && now.Sub(c.at) < s.cfg.CacheTTL+s.cfg.StaleTTL {
		// Known, but not lately: answer with what was known and read it
		// again in the background. A revocation this node heard of
		// deleted the entry; one it could not hear of (the records out
		// of its reach) waits until it can read them.
		s.refresh(acc, gen)
		return c.rec, nil
	}
	return s.read(ctx, acc, gen, now)
}

// refresh reads acc's record again in the background, once at a time.
func (s *Store) refresh(acc string, gen uint64) {
	s.mu.Lock()
	if s.refreshing[acc] {
		s.mu.Unlock()
		return
	}
	s.refreshing[acc] = true
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.refreshing, acc)
			s.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = s.read(ctx, acc, gen, s.cfg.Now())
	}()
}

// read reads acc's record from the store and caches it unless a
// revocation (gen) raced with the read.
func (s *Store) read(ctx context.Context, acc string, gen uint64, now time.Time) (*Record, error) {
	res, err := s.cfg.Node.GetIn(ctx, shard.SystemSpace, keyPrefix+acc, shard.ReadOptions{})
	if err != nil {
		return nil, fmt.Errorf("auth: read token record: %w", err)
	}
	var rec *Record
	if res.Found {
		rec = new(Record)
		if err := msgpack.Unmarshal(res.Record.Value, rec); err != nil {
			return nil, fmt.Errorf("auth: decode token record: %w", err)
		}
		rec.parsed, rec.parsedErr = ParseScopes(rec.Scopes)
	}
	s.mu.Lock()
	if len(s.cache) >= maxCached {
		s.cache = map[string]cached{}
	}
	if s.gen == gen { // else a revocation may have raced with the read
		s.cache[acc] = cached{rec: rec, at: now}
	}
	s.mu.Unlock()
	return rec, nil
}
