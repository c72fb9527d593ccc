package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lambdadb/internal/wasmtest"
	"lambdadb/pki"
)

const testSecret = "serve-test-cluster-secret-0123456789abcdef"

func writeSecret(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServeRefusesPlainHTTPOffLoopback(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	for _, addr := range []string{"0.0.0.0:7070", "10.1.2.3:7070", ":7070", "[::]:7070", "no-such-host.invalid:7070"} {
		r := runCLI(nil, "", "serve", "--addr", addr, "--data", data)
		if r.code == 0 || !strings.Contains(r.stderr, "--insecure") || !strings.Contains(r.stderr, "--cluster-secret-file") ||
			!strings.Contains(r.stderr, "not a loopback address") {
			t.Errorf("serve --addr %s: %d %s", addr, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(data); err == nil {
		t.Error("a refused serve created its data directory")
	}
	for _, addr := range []string{"127.0.0.1:1", "[::1]:1", "localhost:1"} {
		if !loopbackOnly(addr) {
			t.Errorf("%s is loopback", addr)
		}
	}
}

func TestServeSecurityUsageErrors(t *testing.T) {
	secret := writeSecret(t, testSecret)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--insecure", "--cluster-secret-file", secret}, "--insecure"},
		{[]string{"--insecure", "--ca-file", secret, "--cert-file", secret, "--key-file", secret}, "--insecure"},
		{[]string{"--cluster-secret-file", secret, "--ca-file", secret, "--cert-file", secret, "--key-file", secret}, "not both"},
		{[]string{"--ca-file", secret}, "go together"},
	} {
		r := runCLI(nil, "", append([]string{"serve", "--data", filepath.Join(t.TempDir(), "d")}, c.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("serve %v: %d %s", c.args, r.code, r.stderr)
		}
	}
	short := writeSecret(t, "too-short")
	r := runCLI(nil, "", "serve", "--data", filepath.Join(t.TempDir(), "d"), "--cluster-secret-file", short)
	if r.code != 1 || !strings.Contains(r.stderr, "at least 32") {
		t.Errorf("short secret: %d %s", r.code, r.stderr)
	}
	r = runCLI(nil, "", "serve", "--data", filepath.Join(t.TempDir(), "d"), "--cluster-secret-file", secret+".missing")
	if r.code != 1 || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("missing secret: %d %s", r.code, r.stderr)
	}
}

func TestServeInsecureFlag(t *testing.T) {
	_, stop := startServe(t, "--addr", "0.0.0.0:0", "--insecure")
	logs := stop()
	if !strings.Contains(logs, "INSECURE") {
		t.Fatalf("no warning in the log:\n%s", logs)
	}
}

// TestServeSecure runs a node in secure mode: it writes <data>/ca.pem,
// speaks TLS 1.3 only, and the CLI reaches it with --cacert (or
// $LAMBDADB_CACERT) and an https:// URL.
func TestServeSecure(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	secret := writeSecret(t, testSecret+"\n")
	if err := os.Chmod(secret, 0o644); err != nil {
		t.Fatal(err)
	}
	addr, stop := startServe(t, "--data", data, "--cluster-secret-file", secret)
	caFile := filepath.Join(data, "ca.pem")
	fi, err := os.Stat(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("ca.pem mode %v", fi.Mode().Perm())
	}
	caPEM, _ := os.ReadFile(caFile)
	want, _, _ := pki.DeriveCA([]byte(testSecret))
	blk, _ := pem.Decode(caPEM)
	if blk == nil || !bytes.Equal(blk.Bytes, want.Raw) {
		t.Fatal("ca.pem is not the CA derived from the secret")
	}

	url := "https://" + addr
	if r := runCLI(nil, "", "put", "--server", url, "--cacert", caFile, "k", "secret value"); r.code != 1 || !strings.Contains(r.stderr, "unauthenticated") {
		t.Fatalf("put without a token: %d %s", r.code, r.stderr)
	}
	boot := runCLI(nil, "", "token", "bootstrap", "--server", url, "--cacert", caFile)
	if boot.code != 0 || !strings.HasPrefix(boot.stdout, "ldb_") {
		t.Fatalf("token bootstrap: %d %q %s", boot.code, boot.stdout, boot.stderr)
	}
	root := strings.TrimSpace(boot.stdout)
	if r := runCLI(nil, "", "token", "bootstrap", "--server", url, "--cacert", caFile); r.code != 1 || !strings.Contains(r.stderr, "already_bootstrapped") {
		t.Fatalf("second bootstrap: %d %s", r.code, r.stderr)
	}
	if r := runCLI(nil, "", "put", "--server", url, "--cacert", caFile, "--token", root, "k", "secret value"); r.code != 0 {
		t.Fatalf("put: %d %s", r.code, r.stderr)
	}
	env := map[string]string{"LAMBDADB_SERVER": url, "LAMBDADB_CACERT": caFile, "LAMBDADB_TOKEN": root}
	if r := runCLI(env, "", "get", "k"); r.code != 0 || r.stdout != "secret value" {
		t.Fatalf("get with $LAMBDADB_CACERT: %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(env, "", "status"); r.code != 0 {
		t.Fatalf("status: %d %s", r.code, r.stderr)
	}
	if r := runCLI(nil, "", "get", "--server", url, "k"); r.code == 0 || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("get without --cacert: %d %s", r.code, r.stderr)
	}
	if r := runCLI(nil, "", "get", "--server", "http://"+addr, "k"); r.code == 0 {
		t.Fatalf("plain http:// answered: %s", r.stdout)
	}
	if r := runCLI(nil, "", "get", "--server", url, "--cacert", secret, "k"); r.code != 2 || !strings.Contains(r.stderr, "no PEM certificate") {
		t.Fatalf("--cacert of a non-PEM file: %d %s", r.code, r.stderr)
	}
	// TLS 1.2 is refused.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12}); err == nil {
		c.Close()
		t.Fatal("a TLS 1.2 handshake succeeded")
	}
	logs := stop()
	for _, w := range []string{"transport=tls1.3", "chmod 600"} {
		if !strings.Contains(logs, w) {
			t.Errorf("log lacks %q:\n%s", w, logs)
		}
	}
	if strings.Contains(logs, testSecret) {
		t.Error("the log holds the secret")
	}
	if strings.Contains(logs, root[len("ldb_")+17:]) {
		t.Error("the log holds the admin token")
	}
}

// TestServeOwnPKI runs serve with --ca-file, --cert-file, --key-file, and
// refuses a certificate that does not name the node.
func TestServeOwnPKI(t *testing.T) {
	dir := t.TempDir()
	ca, key, err := pki.DeriveCA([]byte("an-operator-pki-stands-in-here-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := pki.DeriveCA([]byte("another-trusted-operator-ca-0123456789ab"))
	caFile := filepath.Join(dir, "ca.pem")
	var bundle []byte
	for _, c := range []*x509.Certificate{other, ca} {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(caFile, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(id string) (string, string) {
		cert, err := pki.MintNode(ca, key, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		cf, kf := filepath.Join(dir, id+".crt"), filepath.Join(dir, id+".key")
		kd, _ := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		_ = os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644)
		_ = os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600)
		return cf, kf
	}
	cf, kf := write("n1")
	addr, _ := startServe(t, "--ca-file", caFile, "--cert-file", cf, "--key-file", kf)
	boot := runCLI(nil, "", "token", "bootstrap", "--server", "https://"+addr, "--cacert", caFile)
	if boot.code != 0 {
		t.Fatalf("bootstrap: %d %s", boot.code, boot.stderr)
	}
	if r := runCLI(nil, "", "put", "--server", "https://"+addr, "--cacert", caFile, "--token", strings.TrimSpace(boot.stdout), "k", "v"); r.code != 0 {
		t.Fatalf("put: %d %s", r.code, r.stderr)
	}
	cf2, kf2 := write("n2")
	r := runCLI(nil, "", "serve", "--id", "n1", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "d2"),
		"--ca-file", caFile, "--cert-file", cf2, "--key-file", kf2)
	if r.code == 0 || !strings.Contains(r.stderr, "lambdadb://node/n1") {
		t.Fatalf("serve with n2's certificate as n1: %d %s", r.code, r.stderr)
	}
}

// TestServeSecureCluster runs three nodes with one secret file: writes go
// through one node and are read through the others over HTTPS, and a
// function's cluster-wide stats reach every node (server.Config.PeerScheme).
func TestServeSecureCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	secret := writeSecret(t, testSecret)
	var peers []string
	addrs := map[string]string{}
	for i := 1; i <= 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("n%d", i)
		addrs[id] = ln.Addr().String()
		peers = append(peers, id+"="+ln.Addr().String())
		ln.Close()
	}
	ctx, stop := context.WithCancel(context.Background())
	dones := make(chan int, 3)
	defer func() {
		stop()
		for range 3 {
			select {
			case <-dones:
			case <-time.After(time.Minute):
				t.Error("a node did not stop")
				return
			}
		}
	}()
	ready := make(chan string, 3)
	data := map[string]string{}
	for id := range addrs {
		c, _, _ := testCLI(nil, "")
		c.notifyContext = func(context.Context) (context.Context, context.CancelFunc) { return context.WithCancel(ctx) }
		c.ready = func(addr string) { ready <- addr }
		data[id] = filepath.Join(t.TempDir(), id)
		args := []string{"serve", "--id", id, "--peers", strings.Join(peers, ","), "--data", data[id],
			"--shards", "2", "--cluster-secret-file", secret}
		go func() { dones <- c.run(args) }()
	}
	for range 3 {
		select {
		case <-ready:
		case <-time.After(time.Minute):
			t.Fatal("nodes did not start")
		}
	}
	caFile := filepath.Join(data["n1"], "ca.pem")
	var root string
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := runCLI(map[string]string{"LAMBDADB_SERVER": "https://" + addrs["n2"], "LAMBDADB_CACERT": caFile}, "", "token", "bootstrap")
		if r.code == 0 {
			root = strings.TrimSpace(r.stdout)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bootstrap via n2: %d %s", r.code, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	envAs := func(id, tok string) map[string]string {
		return map[string]string{"LAMBDADB_SERVER": "https://" + addrs[id], "LAMBDADB_CACERT": caFile, "LAMBDADB_TOKEN": tok}
	}
	env := func(id string) map[string]string { return envAs(id, root) }
	deadline = time.Now().Add(30 * time.Second)
	for {
		r := runCLI(env("n1"), "", "put", "k", "shared")
		if r.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put via n1: %d %s", r.code, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, id := range []string{"n2", "n3"} {
		if r := runCLI(env(id), "", "get", "k"); r.code != 0 || r.stdout != "shared" {
			t.Fatalf("get via %s: %d %q %s", id, r.code, r.stdout, r.stderr)
		}
	}
	wasm := filepath.Join(t.TempDir(), "counter.wasm")
	if err := os.WriteFile(wasm, wasmtest.Example(t, "counter"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(env("n1"), "", "fn", "deploy", "counter", wasm); r.code != 0 {
		t.Fatalf("deploy: %d %s", r.code, r.stderr)
	}
	caPEM, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	var body string
	deadline = time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "https://"+addrs["n1"]+"/v1/functions/counter", nil)
		req.Header.Set("Authorization", "Bearer "+root)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		if resp.StatusCode == 200 && strings.Contains(body, `"n2"`) && strings.Contains(body, `"n3"`) && !strings.Contains(body, `"error"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("function stats from every node: %d %s", resp.StatusCode, body)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Two applications that cannot see each other, a read-only token, a
	// revocation seen by every node at once.
	mint := func(args ...string) (tok, acc string) {
		t.Helper()
		r := runCLI(env("n3"), "", append([]string{"token", "create"}, args...)...)
		if r.code != 0 {
			t.Fatalf("token create %v: %d %s", args, r.code, r.stderr)
		}
		f := strings.Fields(r.stderr)
		return strings.TrimSpace(r.stdout), f[1]
	}
	shop, _ := mint("--ns", "shop", "kv:read:*", "kv:write:*", "fn:deploy", "fn:invoke")
	blog, blogAcc := mint("--ns", "blog", "kv:read:*", "kv:write:*", "fn:invoke")
	ro, _ := mint("--ns", "shop", "kv:read:*")
	for _, c := range []struct {
		tok, val string
	}{{shop, "shop's"}, {blog, "blog's"}} {
		if r := runCLI(envAs("n1", c.tok), "", "put", "k", c.val); r.code != 0 {
			t.Fatalf("put: %d %s", r.code, r.stderr)
		}
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		for _, c := range []struct{ tok, want string }{{shop, "shop's"}, {blog, "blog's"}, {ro, "shop's"}, {root, "shared"}} {
			if r := runCLI(envAs(id, c.tok), "", "get", "k"); r.code != 0 || r.stdout != c.want {
				t.Fatalf("get k via %s: %d %q %s, want %q", id, r.code, r.stdout, r.stderr, c.want)
			}
		}
	}
	if r := runCLI(envAs("n2", ro), "", "put", "k", "x"); r.code != 1 || !strings.Contains(r.stderr, "forbidden") {
		t.Fatalf("read-only token wrote: %d %s", r.code, r.stderr)
	}
	// shop's function is shop's: blog cannot see or run it, and when run
	// through any node it counts shop's key.
	if r := runCLI(envAs("n1", shop), "", "fn", "deploy", "counter", wasm); r.code != 0 {
		t.Fatalf("shop deploy: %d %s", r.code, r.stderr)
	}
	if r := runCLI(envAs("n2", blog), "", "fn", "invoke", "--key", "hits", "counter"); r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("blog invoked shop's function: %d %s %s", r.code, r.stdout, r.stderr)
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		if r := runCLI(envAs(id, shop), "", "fn", "invoke", "--key", "hits", "counter"); r.code != 0 {
			t.Fatalf("shop invoke via %s: %d %s", id, r.code, r.stderr)
		}
	}
	if r := runCLI(envAs("n1", shop), "", "get", "hits"); r.code != 0 || r.stdout != "3" {
		t.Fatalf("shop's hits: %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(envAs("n1", blog), "", "get", "hits"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("blog sees shop's hits: %d %q %s", r.code, r.stdout, r.stderr)
	}
	// Every node has blog's token cached; a revocation through n3 is
	// refused by all three at once.
	for _, id := range []string{"n1", "n2", "n3"} {
		if r := runCLI(envAs(id, blog), "", "get", "k"); r.code != 0 {
			t.Fatalf("blog get via %s: %d %s", id, r.code, r.stderr)
		}
	}
	if r := runCLI(env("n3"), "", "token", "revoke", blogAcc); r.code != 0 || r.stderr != "" {
		t.Fatalf("revoke: %d %s %s", r.code, r.stdout, r.stderr)
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		if r := runCLI(envAs(id, blog), "", "get", "k"); r.code != 1 || !strings.Contains(r.stderr, "unauthenticated") {
			t.Fatalf("revoked token via %s: %d %q %s", id, r.code, r.stdout, r.stderr)
		}
	}
	if r := runCLI(env("n1"), "", "token", "list"); r.code != 0 || strings.Count(r.stdout, "\n") != 4 || strings.Contains(r.stdout, blogAcc) {
		t.Fatalf("token list: %d %s %s", r.code, r.stdout, r.stderr)
	}
}
