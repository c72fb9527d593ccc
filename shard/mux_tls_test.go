package shard

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"lambdadb/pki"
)

var (
	testSecret  = []byte("mux-test-cluster-secret-0123456789abcdef")
	otherSecret = []byte("another-cluster-secret-0123456789abcdef!")
)

func testSet(t *testing.T, id string, secrets ...[]byte) *pki.Set {
	t.Helper()
	s, err := pki.FromSecrets(secrets, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type streamSeen struct {
	peer     string
	snapshot bool
}

// secureMux starts node id's mux in secure mode: internal RPC connections
// echo a line back, Raft streams are reported on the returned channel and
// echoed, public HTTP answers "public".
func secureMux(t *testing.T, id string, set *pki.Set, faults *Faults) (*Mux, chan streamSeen) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(ln, MuxConfig{NodeID: id, TLS: set, Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	go m.Serve()
	echo := func(c net.Conn) {
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			_, _ = io.WriteString(c, "echo "+line)
		}
	}
	go func() {
		for {
			c, err := m.InternalListener().Accept()
			if err != nil {
				return
			}
			go echo(c)
		}
	}()
	seen := make(chan streamSeen, 16)
	m.handleMulti(func(c net.Conn, peer string, snapshot bool) {
		seen <- streamSeen{peer, snapshot}
		echo(c)
	})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "public")
	})}
	go srv.Serve(m.PublicListener())
	t.Cleanup(func() { srv.Close() })
	return m, seen
}

// dialMux returns a mux of node id that is only used to dial.
func dialMux(t *testing.T, id string, set *pki.Set, faults *Faults) *Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(ln, MuxConfig{NodeID: id, TLS: set, Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func roundTrip(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// closedAtOnce asserts that the server closes c, sending nothing, well
// before the mux's 5 s handshake timeout.
func closedAtOnce(t *testing.T, c net.Conn, what string) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(4 * time.Second))
	b, err := io.ReadAll(c)
	if err == nil || errors.Is(err, io.EOF) || !isTimeout(err) {
		if len(b) > 0 && bytes.Contains(b, []byte("echo")) {
			t.Fatalf("%s: got a stream (%q)", what, b)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s: closed only after %v", what, d)
		}
		return
	}
	t.Fatalf("%s: connection still open after %v", what, time.Since(start))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestMuxTLSPeerStreams(t *testing.T) {
	m1, seen := secureMux(t, "n1", testSet(t, "n1", testSecret), nil)
	m2 := dialMux(t, "n2", testSet(t, "n2", testSecret), nil)
	addr := m1.Addr().String()

	c, err := m2.dial(addr, "n1", magicInternal, 0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, "rpc"); err != nil || got != "echo rpc" {
		t.Fatalf("internal RPC: %q, %v", got, err)
	}
	c.Close()
	for _, snap := range []bool{false, true} {
		c, err := m2.dialMulti(t.Context(), addr, "n1", snap)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := roundTrip(c, "raft"); err != nil || got != "echo raft" {
			t.Fatalf("raft stream: %q, %v", got, err)
		}
		c.Close()
		if s := <-seen; s.peer != "n2" || s.snapshot != snap {
			t.Fatalf("stream seen as %+v", s)
		}
	}
	if m1.Refused() != 0 {
		t.Fatalf("refused %d good connections", m1.Refused())
	}
	// Dialling node n3 at n1's address: the dialler refuses the server.
	if _, err := m2.dial(addr, "n3", magicInternal, 0, 5*time.Second); !errors.Is(err, pki.ErrNodeIdentity) {
		t.Fatalf("dial of the wrong node: %v", err)
	}
}

func TestMuxTLSFaults(t *testing.T) {
	f := &Faults{}
	m1, _ := secureMux(t, "n1", testSet(t, "n1", testSecret), f)
	m2 := dialMux(t, "n2", testSet(t, "n2", testSecret), f)
	c, err := m2.dial(m1.Addr().String(), "n1", magicInternal, 0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "a"); err != nil || got != "echo a" {
		t.Fatalf("before the fault: %q, %v", got, err)
	}
	f.Drop("n2", "n1")
	if _, err := roundTrip(c, "b"); err == nil {
		t.Fatal("a dropped link carried a message")
	}
	if _, err := m2.dial(m1.Addr().String(), "n1", magicInternal, 0, 5*time.Second); !errors.Is(err, errDialFault) {
		t.Fatalf("dial over a dropped link: %v", err)
	}
	f.Heal()
	c2, err := m2.dial(m1.Addr().String(), "n1", magicInternal, 0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := roundTrip(c2, "c"); err != nil || got != "echo c" {
		t.Fatalf("after healing: %q, %v", got, err)
	}
}

func TestMuxTLSRefusesStrangers(t *testing.T) {
	set1 := testSet(t, "n1", testSecret)
	m1, seen := secureMux(t, "n1", set1, nil)
	addr := m1.Addr().String()
	pool := x509.NewCertPool()
	pool.AddCert(set1.CAs[0])
	preamble := func(magic, id string) []byte {
		var b bytes.Buffer
		_ = writePreamble(&b, magic, 0, id)
		return append(b.Bytes(), "hello\n"...)
	}
	tlsDial := func(cfg *tls.Config) *tls.Conn {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// No client certificate.
	for _, magic := range []string{magicInternal, magicMulti, magicSnap} {
		c := tlsDial(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if _, err := c.Write(preamble(magic, "n2")); err != nil {
			t.Fatal(err)
		}
		closedAtOnce(t, c, "no certificate, "+magic)
	}
	// A valid node certificate (n2) claiming to be n3.
	for _, magic := range []string{magicInternal, magicMulti} {
		c := tlsDial(testSet(t, "n2", testSecret).PeerConfig("n1"))
		if _, err := c.Write(preamble(magic, "n3")); err != nil {
			t.Fatal(err)
		}
		closedAtOnce(t, c, "n2 claiming n3, "+magic)
	}
	// A client certificate of the cluster's CA.
	ca, key, err := pki.DeriveCA(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := pki.MintClient(ca, key, "n2")
	if err != nil {
		t.Fatal(err)
	}
	c := tlsDial(&tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{cc}})
	if _, err := c.Write(preamble(magicMulti, "n2")); err != nil {
		t.Fatal(err)
	}
	closedAtOnce(t, c, "client certificate")

	// A node certificate of another secret's CA: the handshake fails (and
	// the mux dialler refuses the server too).
	other := dialMux(t, "n2", testSet(t, "n2", otherSecret), nil)
	if c, err := other.dial(addr, "n1", magicInternal, 0, 5*time.Second); err == nil {
		_, err = roundTrip(c, "x")
		c.Close()
		if err == nil {
			t.Fatal("another cluster's node got a stream")
		}
	}
	otherCA, otherKey, _ := pki.DeriveCA(otherSecret)
	bad, _ := pki.MintNode(otherCA, otherKey, "n2", nil)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// Send it even though the server asks for certificates of its CAs.
	tc := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &bad, nil }})
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	err = tc.Handshake()
	if err == nil {
		// TLS 1.3: the server's verdict on the client arrives after.
		_, _ = tc.Write(preamble(magicInternal, "n2"))
		_, err = tc.Read(make([]byte, 1))
	}
	tc.Close()
	if err == nil || isTimeout(err) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("another CA's certificate: %v, want the handshake refused", err)
	}

	// Plain text, to a secure node: no HTTP answer, no stream.
	for _, open := range [][]byte{preamble(magicInternal, "n2"), []byte("GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")} {
		pc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.Write(open); err != nil {
			t.Fatal(err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(4 * time.Second))
		b, err := io.ReadAll(pc)
		pc.Close()
		if isTimeout(err) || bytes.Contains(b, []byte("HTTP/")) || bytes.Contains(b, []byte("echo")) {
			t.Fatalf("plain text %q: got %q, %v", open[:4], b, err)
		}
	}

	select {
	case s := <-seen:
		t.Fatalf("a stranger got a Raft stream: %+v", s)
	default:
	}
	if m1.Refused() < 7 {
		t.Fatalf("Refused() = %d, want at least 7", m1.Refused())
	}

	// Public HTTPS needs no client certificate.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	resp, err := hc.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "public" || resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		t.Fatalf("public HTTPS: %q, %+v", b, resp.TLS)
	}
	// Plain http:// to the same address fails.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("plain HTTP to a secure node answered %s", resp.Status)
	}
}

func TestMuxTLSConfigMismatch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := NewMux(ln, MuxConfig{NodeID: "n1", TLS: testSet(t, "n2", testSecret)}); err == nil {
		t.Fatal("a mux took another node's certificate")
	}
}
