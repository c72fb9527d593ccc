package auth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/auth"
	"lambdadb/internal/testnode"
	"lambdadb/shard"
)

func TestTokenFormat(t *testing.T) {
	tok, acc, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != auth.TokenLen || !strings.HasPrefix(string(tok), "ldb_"+acc+"_") {
		t.Fatalf("token %d bytes, accessor %q", len(tok), acc)
	}
	got, err := auth.ParseToken(string(tok))
	if err != nil || got != acc {
		t.Fatalf("ParseToken = %q, %v", got, err)
	}
	// Any one changed character is caught by the checksum or the form.
	s := []byte(tok)
	for i := range s {
		c := s[i]
		s[i] = c ^ 0x01
		if _, err := auth.ParseToken(string(s)); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("token with byte %d changed accepted", i)
		}
		s[i] = c
	}
	for _, bad := range []string{"", "ldb_", string(tok[:len(tok)-1]), "Bearer " + string(tok), strings.ToUpper(string(tok))} {
		if _, err := auth.ParseToken(bad); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

// TestTokenNeverPrinted: no formatting verb, no slog handler shows a
// token's secret.
func TestTokenNeverPrinted(t *testing.T) {
	tok, acc, _ := auth.NewToken()
	secret := string(tok)[len("ldb_")+16+1:]
	var buf bytes.Buffer
	for _, verb := range []string{"%s", "%v", "%q", "%#v", "%+v", "%x", "%X"} {
		fmt.Fprintf(&buf, verb+"\n", tok)
	}
	fmt.Fprintf(&buf, "%v\n", struct{ T auth.Token }{tok})
	slog.New(slog.NewTextHandler(&buf, nil)).Info("request", "token", tok)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("request", "token", tok)
	out := buf.String()
	if strings.Contains(out, secret[:12]) {
		t.Fatalf("secret printed:\n%s", out)
	}
	if !strings.Contains(out, acc) {
		t.Fatalf("accessor not printed:\n%s", out)
	}
	if err := func() error { _, err := auth.ParseToken(string(tok) + "x"); return err }(); strings.Contains(err.Error(), secret[:12]) {
		t.Fatalf("error holds the secret: %v", err)
	}
}

func TestScopes(t *testing.T) {
	for _, bad := range []string{"", "kv:read", "kv:read:", "kv:delete:*", "root", "fn:invoke:x", "kv:write:\xff"} {
		if _, err := auth.ParseScope(bad); !errors.Is(err, auth.ErrInvalid) {
			t.Errorf("ParseScope(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := auth.ParseScopes(nil); !errors.Is(err, auth.ErrInvalid) {
		t.Error("no scopes accepted")
	}
	p := func(scopes ...string) *auth.Principal {
		ss, err := auth.ParseScopes(scopes)
		if err != nil {
			t.Fatal(err)
		}
		return &auth.Principal{Namespace: "shop", Scopes: ss}
	}
	for _, tc := range []struct {
		p      *auth.Principal
		action string
		key    string
		want   bool
	}{
		{p("kv:read:*"), auth.KVRead, "anything", true},
		{p("kv:read:*"), auth.KVWrite, "anything", false},
		{p("kv:read:orders/"), auth.KVRead, "orders/1", true},
		{p("kv:read:orders/"), auth.KVRead, "orders/", true},
		{p("kv:read:orders/"), auth.KVRead, "orders", false},
		{p("kv:read:orders/"), auth.KVRead, "", false},
		{p("kv:read:orders/"), auth.KVRead, "users/1", false},
		{p("kv:write:a", "kv:write:b"), auth.KVWrite, "b1", true},
		{p("feed:read:x/"), auth.FeedRead, "x/y", true},
		{p("feed:read:x/"), auth.KVRead, "x/y", false},
		{p("query"), auth.Query, "", true},
		{p("fn:invoke"), auth.FnDeploy, "", false},
		{p("admin"), auth.KVWrite, "z", true},
		{p("admin"), auth.FnDeploy, "", true},
	} {
		if got := tc.p.Allows(tc.action, tc.key); got != tc.want {
			t.Errorf("%v Allows(%s, %q) = %v, want %v", tc.p.Scopes, tc.action, tc.key, got, tc.want)
		}
	}
}

func TestStore(t *testing.T) {
	n := testnode.New(t)
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s, err := auth.New(auth.Config{Node: n, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	root, err := s.Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bootstrap(ctx); !errors.Is(err, auth.ErrBootstrapped) {
		t.Fatalf("second bootstrap: %v", err)
	}
	p, err := s.Authenticate(ctx, string(root.Token))
	if err != nil || !p.IsAdmin() || p.Namespace != "default" || p.Accessor != root.Accessor {
		t.Fatalf("root: %+v, %v", p, err)
	}
	app, err := s.Create(ctx, "shop", []string{"kv:read:*", "fn:invoke"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "Shop!", []string{"query"}, 0); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("bad namespace: %v", err)
	}
	if _, err := s.Create(ctx, "shop", []string{"kv:rea:*"}, 0); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("bad scope: %v", err)
	}
	p, err = s.Authenticate(ctx, string(app.Token))
	if err != nil || p.Namespace != "shop" || p.IsAdmin() || !p.Allows(auth.KVRead, "x") || p.Allows(auth.KVWrite, "x") {
		t.Fatalf("app: %+v, %v", p, err)
	}
	// A token with the right accessor and checksum but another secret.
	forged, _, _ := auth.NewToken()
	forged = auth.Token("ldb_" + app.Accessor + string(forged)[len("ldb_")+16:])
	if _, err := s.Authenticate(ctx, fixCheck(string(forged))); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("forged secret: %v", err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %+v, %v", list, err)
	}
	// Expiry, by the store's clock.
	now.Add(int64(2 * time.Hour))
	if _, err := s.Authenticate(ctx, string(app.Token)); !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired: %v", err)
	}
	if list, _ := s.List(ctx); !list[0].Expired && !list[1].Expired {
		t.Fatalf("list shows no expired token: %+v", list)
	}
	// Revocation, though the record is cached.
	if _, err := s.Authenticate(ctx, string(root.Token)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, root.Accessor); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, string(root.Token)); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("revoked: %v", err)
	}
	if _, err := s.Revoke(ctx, root.Accessor); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}
	// A second store on the same node (another node's cache) reads the
	// deletion: nothing cached there.
	s2, _ := auth.New(auth.Config{Node: n})
	if _, err := s2.Authenticate(ctx, string(root.Token)); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("revoked, other store: %v", err)
	}
}

// fixCheck recomputes a token's checksum (to forge a well-formed token).
func fixCheck(tok string) string {
	body := tok[:len(tok)-8]
	return body + crc(body)
}

// flakyNode fails token record reads while down is set.
type flakyNode struct {
	auth.Node
	down atomic.Bool
}

func (f *flakyNode) GetIn(ctx context.Context, sp shard.Space, key string, ro shard.ReadOptions) (shard.GetResult, error) {
	if f.down.Load() {
		return shard.GetResult{}, shard.ErrUnavailable
	}
	return f.Node.GetIn(ctx, sp, key, ro)
}

// TestStaleRecords: past CacheTTL a known token is answered from the cache
// while the record is read again in the background — so a node cut off
// from the records keeps serving the tokens it knew, up to StaleTTL — and
// a revocation it had not heard of applies once the read comes back.
func TestStaleRecords(t *testing.T) {
	n := &flakyNode{Node: testnode.New(t)}
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	s, err := auth.New(auth.Config{Node: n, Now: clock, CacheTTL: time.Minute, StaleTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	root, err := s.Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, string(root.Token)); err != nil {
		t.Fatal(err)
	}
	n.down.Store(true)
	now.Add(int64(10 * time.Minute))
	if _, err := s.Authenticate(ctx, string(root.Token)); err != nil {
		t.Fatalf("records unreachable, token known 10 min ago: %v", err)
	}
	now.Add(int64(2 * time.Hour))
	if _, err := s.Authenticate(ctx, string(root.Token)); err == nil || errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("records unreachable past StaleTTL: %v, want the store's error", err)
	}
	// Back: known again; then revoked through another node's store, which
	// could not tell this one.
	n.down.Store(false)
	if _, err := s.Authenticate(ctx, string(root.Token)); err != nil {
		t.Fatal(err)
	}
	other, _ := auth.New(auth.Config{Node: n.Node, Now: clock})
	if _, err := other.Revoke(ctx, root.Accessor); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, string(root.Token)); err != nil {
		t.Fatalf("within CacheTTL the cached record answers: %v", err)
	}
	now.Add(int64(2 * time.Minute))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.Authenticate(ctx, string(root.Token))
		if errors.Is(err, auth.ErrUnauthenticated) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked token still accepted after the background read: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	n := testnode.New(b)
	s, _ := auth.New(auth.Config{Node: n})
	root, err := s.Bootstrap(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	tok := string(root.Token)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Authenticate(context.Background(), tok); err != nil {
			b.Fatal(err)
		}
	}
}
