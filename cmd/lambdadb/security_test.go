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
	if r := runCLI(nil, "", "put", "--server", url, "--cacert", caFile, "k", "secret value"); r.code != 0 {
		t.Fatalf("put: %d %s", r.code, r.stderr)
	}
	env := map[string]string{"LAMBDADB_SERVER": url, "LAMBDADB_CACERT": caFile}
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
	if r := runCLI(nil, "", "put", "--server", "https://"+addr, "--cacert", caFile, "k", "v"); r.code != 0 {
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
	env := func(id string) map[string]string {
		return map[string]string{"LAMBDADB_SERVER": "https://" + addrs[id], "LAMBDADB_CACERT": caFile}
	}
	deadline := time.Now().Add(30 * time.Second)
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
		resp, err := hc.Get("https://" + addrs["n1"] + "/v1/functions/counter")
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
}
