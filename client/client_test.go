package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"lambdadb/client"
	"lambdadb/internal/session"
	"lambdadb/internal/testnode"
)

func newClient(t *testing.T, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(serverURL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "127.0.0.1:7070", "ftp://h", "http://", "http://h/?q=1", "http://h/#f", "%zz"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
	for _, u := range []string{"http://h", "https://h:1/", "http://h/prefix"} {
		if _, err := client.New(u); err != nil {
			t.Errorf("New(%q): %v", u, err)
		}
	}
	if _, err := client.New("http://h", client.WithToken("junk")); err == nil {
		t.Error("New with a bad token succeeded")
	}
}

func TestPutGetDelete(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	v1, err := c.Put(ctx, "crud/k", []byte("one"))
	if err != nil || v1 == 0 {
		t.Fatalf("Put = %d, %v", v1, err)
	}
	item, found, err := c.Get(ctx, "crud/k")
	if err != nil || !found || string(item.Value) != "one" || item.Version != v1 || item.Key != "crud/k" {
		t.Fatalf("Get = %+v, %v, %v", item, found, err)
	}
	for _, cons := range []client.Consistency{client.Linearizable, client.Session, client.Stale} {
		if item, found, err := c.Get(ctx, "crud/k", client.WithConsistency(cons)); err != nil || !found || string(item.Value) != "one" {
			t.Fatalf("Get(%s) = %+v, %v, %v", cons, item, found, err)
		}
	}
	if _, err := c.Put(ctx, "crud/empty", nil); err != nil {
		t.Fatalf("Put(nil): %v", err)
	}
	if item, found, err := c.Get(ctx, "crud/empty"); err != nil || !found || len(item.Value) != 0 {
		t.Fatalf("Get(empty) = %+v, %v, %v", item, found, err)
	}
	if ok, err := c.Delete(ctx, "crud/k"); err != nil || !ok {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	if ok, err := c.Delete(ctx, "crud/k"); err != nil || ok {
		t.Fatalf("second Delete = %v, %v", ok, err)
	}
	if _, found, err := c.Get(ctx, "crud/k"); err != nil || found {
		t.Fatalf("Get after Delete = %v, %v", found, err)
	}
}

func TestPreconditions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	// The server outlives one run of the test (go test -count=N).
	if _, err := c.Delete(ctx, "cond/k"); err != nil {
		t.Fatal(err)
	}
	v, err := c.Put(ctx, "cond/k", []byte("a"), client.IfNoneMatch())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		run    func() error
		status int
		code   string
	}{
		{"put if-none-match present", func() error {
			_, err := c.Put(ctx, "cond/k", []byte("b"), client.IfNoneMatch())
			return err
		}, 412, "precondition_failed"},
		{"put if-match stale", func() error {
			_, err := c.Put(ctx, "cond/k", []byte("b"), client.IfMatch(v+100))
			return err
		}, 412, "precondition_failed"},
		{"put if-match absent", func() error {
			_, err := c.Put(ctx, "cond/absent", []byte("b"), client.IfMatch(v))
			return err
		}, 412, "precondition_failed"},
		{"delete if-match stale", func() error {
			_, err := c.Delete(ctx, "cond/k", client.IfMatch(v+100))
			return err
		}, 412, "precondition_failed"},
		{"if-match zero", func() error {
			_, err := c.Put(ctx, "cond/k", []byte("b"), client.IfMatch(0))
			return err
		}, 400, "bad_precondition"},
		{"delete if-none-match", func() error {
			_, err := c.Delete(ctx, "cond/k", client.IfNoneMatch())
			return err
		}, 400, "bad_precondition"},
		{"invalid key", func() error {
			_, err := c.Put(ctx, strings.Repeat("k", 1025), nil)
			return err
		}, 400, "invalid_key"},
		{"bad consistency", func() error {
			_, _, err := c.Get(ctx, "cond/k", client.WithConsistency("strong"))
			return err
		}, 400, "bad_consistency"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			var e *client.Error
			if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code || e.Message == "" {
				t.Fatalf("err = %#v, want status %d code %s", err, tc.status, tc.code)
			}
			if got := errors.Is(err, client.ErrPrecondition); got != (tc.status == 412) {
				t.Errorf("errors.Is(err, ErrPrecondition) = %v", got)
			}
			if errors.Is(err, client.ErrNotFound) {
				t.Error("errors.Is(err, ErrNotFound) = true")
			}
		})
	}
	// The key kept its value, and the current version still works.
	if _, err := c.Put(ctx, "cond/k", []byte("c"), client.IfMatch(v)); err != nil {
		t.Fatal(err)
	}
	if item, _, _ := c.Get(ctx, "cond/k"); string(item.Value) != "c" {
		t.Fatalf("value = %q, want c", item.Value)
	}
}

func TestKeyEscaping(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	keys := []string{
		"esc/a/b", "esc/a//b", "esc//lead", "esc/trail/", "esc/.", "esc/..", "esc/./x", "esc/../x",
		"esc/sp ace", "esc/q?x=1#y", "esc/per%2Fcent", "esc/plus+", "esc/ünï/cödé", "esc/{tag}/x", "esc/%",
	}
	for i, k := range keys {
		if _, err := c.Put(ctx, k, []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	for i, k := range keys {
		item, found, err := c.Get(ctx, k)
		if err != nil || !found || string(item.Value) != fmt.Sprint(i) {
			t.Fatalf("Get(%q) = %q, %v, %v; want %d", k, item.Value, found, err, i)
		}
	}
	var got []string
	for item, err := range c.ScanAll(ctx, "esc/", client.ScanOptions{Limit: 4}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, item.Key)
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("scan = %q\nwant %q", got, want)
	}
}

func TestScan(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	var want []string
	for i := range 25 {
		k := fmt.Sprintf("page/%02d", i)
		want = append(want, k)
		if _, err := c.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.Scan(ctx, "page/", client.ScanOptions{Limit: 10})
	if err != nil || len(page.Items) != 10 || !page.More || page.Next != "page/10" {
		t.Fatalf("Scan = %+v, %v", page, err)
	}
	page, err = c.Scan(ctx, "page/", client.ScanOptions{Start: "page/05", End: "page/08", Consistency: client.Stale})
	if err != nil || len(page.Items) != 3 || page.More || page.Items[0].Key != "page/05" || string(page.Items[2].Value) != "page/07" {
		t.Fatalf("Scan range = %+v, %v", page, err)
	}
	var got []string
	for item, err := range c.ScanAll(ctx, "page/", client.ScanOptions{Limit: 7}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, item.Key)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ScanAll = %v", got)
	}
	// Breaking out early stops the iteration.
	n := 0
	for range c.ScanAll(ctx, "page/", client.ScanOptions{Limit: 2}) {
		if n++; n == 3 {
			break
		}
	}
	// An error is yielded once.
	errs := 0
	for _, err := range c.ScanAll(ctx, "page/", client.ScanOptions{Limit: -1}) {
		var e *client.Error
		if !errors.As(err, &e) || e.Code != "invalid_scan" {
			t.Fatalf("err = %v, want invalid_scan", err)
		}
		errs++
	}
	if errs != 1 {
		t.Fatalf("%d errors yielded, want 1", errs)
	}
}

func TestClusterAndHealth(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	h, err := c.Health(ctx)
	if err != nil || h.Status != "ok" || h.Node != "n1" {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	st, err := c.Cluster(ctx)
	if err != nil || st.Node != "n1" || len(st.Nodes) != 1 || !st.Nodes[0].Up || len(st.Shards) != 4 {
		t.Fatalf("Cluster = %+v, %v", st, err)
	}
	// A wrong path prefix reaches no route.
	wrong, err := client.New(serverURL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Health(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Health on a wrong prefix: %v, want ErrNotFound", err)
	}
}

// TestSessionToken uses a second client that continues the first's
// session, and checks the token only grows.
func TestSessionToken(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	if c.Token() != "" {
		t.Fatalf("new client has token %q", c.Token())
	}
	for i := range 20 {
		if _, err := c.Put(ctx, fmt.Sprintf("sess/%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := session.Decode(c.Token())
	if err != nil || len(tok) < 2 {
		t.Fatalf("token %q = %v, %v; want several shards", c.Token(), tok, err)
	}
	c2 := newClient(t, client.WithToken(c.Token()))
	if c2.Token() != c.Token() {
		t.Fatalf("WithToken: %q, want %q", c2.Token(), c.Token())
	}
	if _, found, err := c2.Get(ctx, "sess/19"); err != nil || !found {
		t.Fatalf("Get = %v, %v", found, err)
	}
	after, _ := session.Decode(c2.Token())
	if !after.Covers(tok) {
		t.Fatalf("token shrank: %v -> %v", tok, after)
	}
}

// TestSessionMerge checks against a scripted server that the client sends
// the merge of every token it received.
func TestSessionMerge(t *testing.T) {
	t.Parallel()
	replies := []session.Token{{1: 5}, {2: 7}, {1: 3}, nil}
	var (
		mu   sync.Mutex
		sent []string
		i    int
	)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, r.Header.Get(session.Header))
		w.Header().Set(session.Header, replies[i%len(replies)].Encode())
		i++
		w.Header().Set("ETag", `"1"`)
		_, _ = w.Write([]byte("v"))
	}))
	defer ts.Close()
	// Without routing: the router's placement request would reach this
	// scripted server too.
	c, err := client.New(ts.URL, client.WithoutRouting())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, _, err := c.Get(t.Context(), "k"); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"",
		session.Token{1: 5}.Encode(),
		session.Token{1: 5, 2: 7}.Encode(),
		session.Token{1: 5, 2: 7}.Encode(),
		session.Token{1: 5, 2: 7}.Encode(),
	}
	if !slices.Equal(sent, want) {
		t.Fatalf("sent tokens %q\nwant %q", sent, want)
	}
}

func TestConcurrentSession(t *testing.T) {
	t.Parallel()
	node := testnode.New(t)
	ts := testnode.Serve(t, node)
	c, err := client.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10 {
				k := fmt.Sprintf("g%d/%d", g, i)
				if _, err := c.Put(context.Background(), k, []byte(k)); err != nil {
					t.Error(err)
					return
				}
				if item, found, err := c.Get(context.Background(), k); err != nil || !found || string(item.Value) != k {
					t.Errorf("Get(%s) = %q, %v, %v", k, item.Value, found, err)
					return
				}
			}
		})
	}
	wg.Wait()
	tok, err := session.Decode(c.Token())
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range node.Cluster().Shards {
		for _, r := range sh.Replicas {
			if r.Node == node.ID() && tok.Index(sh.ID) > r.Applied {
				t.Fatalf("token %v ahead of shard %d applied %d", tok, sh.ID, r.Applied)
			}
		}
	}
	if len(tok) != len(node.Cluster().Shards) {
		t.Fatalf("80 writes touched %d shards, want all %d", len(tok), len(node.Cluster().Shards))
	}
}

func TestNonJSONError(t *testing.T) {
	t.Parallel()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream exploded", http.StatusBadGateway)
	}))
	defer ts.Close()
	c, err := client.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Put(t.Context(), "k", []byte("v"))
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 502 || e.Code != "" || e.Message != "upstream exploded" {
		t.Fatalf("err = %#v", err)
	}
	if want := "client: upstream exploded (status 502)"; err.Error() != want {
		t.Fatalf("Error() = %q, want %q", err.Error(), want)
	}
}

// TestOverloadedRetried: a request the node refused as overloaded (503
// "overloaded", Retry-After) did not run there, so the client sends it
// again after Retry-After, a few times; other 503s are returned at once.
func TestOverloadedRetried(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		calls int
		shed  = 2 // refusals before success
		code  = "overloaded"
	)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= shed {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, `{"error":"busy","code":%q}`, code)
			return
		}
		w.Header().Set("ETag", `"3"`)
		fmt.Fprint(w, `{"version":3}`)
	}))
	defer ts.Close()
	c, err := client.New(ts.URL, client.WithoutRouting())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.Put(t.Context(), "k", []byte("v")); err != nil || v != 3 || calls != 3 {
		t.Fatalf("put after two refusals: %d, %v (%d calls)", v, err, calls)
	}
	// Beyond the retries, the refusal is returned.
	mu.Lock()
	calls, shed = 0, 100
	mu.Unlock()
	var e *client.Error
	if _, err := c.Put(t.Context(), "k", []byte("v")); !errors.As(err, &e) || e.Code != "overloaded" || calls != 4 {
		t.Fatalf("put refused every time: %v (%d calls)", err, calls)
	}
	// Another 503 may have run: not retried.
	mu.Lock()
	calls, code = 0, "unavailable"
	mu.Unlock()
	if _, err := c.Put(t.Context(), "k", []byte("v")); !errors.As(err, &e) || e.Code != "unavailable" || calls != 1 {
		t.Fatalf("put unavailable: %v (%d calls)", err, calls)
	}
}

// TestWithSession: a Client made by WithSession holds its own session —
// the parent's and a sibling's tokens do not move — and continues the
// session of the token it was given.
func TestWithSession(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	a, err := c.WithSession("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "withsession/a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if a.Token() == "" || c.Token() != "" {
		t.Fatalf("tokens: session %q, parent %q", a.Token(), c.Token())
	}
	b, err := c.WithSession(a.Token())
	if err != nil {
		t.Fatal(err)
	}
	if b.Token() != a.Token() {
		t.Fatalf("continued session %q, want %q", b.Token(), a.Token())
	}
	if item, found, err := b.Get(ctx, "withsession/a"); err != nil || !found || string(item.Value) != "1" {
		t.Fatalf("read in the continued session: %q %v %v", item.Value, found, err)
	}
	if _, err := c.WithSession("not a token"); err == nil {
		t.Fatal("WithSession accepted a malformed token")
	}
}
