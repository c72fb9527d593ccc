package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	secretA = []byte("a-cluster-secret-of-at-least-32-bytes-AAAA")
	secretB = []byte("b-cluster-secret-of-at-least-32-bytes-BBBB")
)

func TestDeriveCADeterministic(t *testing.T) {
	ca1, key1, err := DeriveCA(secretA)
	if err != nil {
		t.Fatal(err)
	}
	ca2, key2, err := DeriveCA(append([]byte("  "), append(secretA, '\n')...))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca1.Raw, ca2.Raw) || !key1.Equal(key2) {
		t.Fatal("the same secret derived different CAs")
	}
	caB, keyB, err := DeriveCA(secretB)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ca1.Raw, caB.Raw) || key1.Equal(keyB) || ca1.Subject.CommonName == caB.Subject.CommonName {
		t.Fatal("two secrets derived the same CA")
	}
	if !ca1.IsCA || ca1.NotBefore.Year() != 2020 || ca1.NotAfter.Year() != 2100 {
		t.Fatalf("CA fields: IsCA %v, %v..%v", ca1.IsCA, ca1.NotBefore, ca1.NotAfter)
	}
	if err := ca1.CheckSignatureFrom(ca1); err != nil {
		t.Fatalf("CA is not self-signed: %v", err)
	}
}

func TestShortSecret(t *testing.T) {
	if _, _, err := DeriveCA([]byte("short")); !errors.Is(err, ErrShortSecret) {
		t.Fatalf("DeriveCA(short) = %v", err)
	}
	// White space does not count.
	if _, err := ParseSecrets([]byte(strings.Repeat(" ", 40) + "\n" + string(secretA))); err != nil {
		t.Fatalf("blank line: %v", err)
	}
	if _, err := ParseSecrets(append(append([]byte{}, secretA...), []byte("\nshort\n")...)); !errors.Is(err, ErrShortSecret) {
		t.Fatalf("short second line: %v", err)
	}
	if _, err := ParseSecrets([]byte("\n \n")); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("empty: %v", err)
	}
	got, err := ParseSecrets([]byte(" " + string(secretB) + "\r\n\n" + string(secretA) + "\n"))
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], secretB) || !bytes.Equal(got[1], secretA) {
		t.Fatalf("ParseSecrets = %q, %v", got, err)
	}
}

func TestReadSecretFileMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret")
	if err := os.WriteFile(p, secretA, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, warn, err := ReadSecretFile(p); err != nil || warn != "" {
		t.Fatalf("0600: warn %q, err %v", warn, err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, warn, err := ReadSecretFile(p); err != nil || !strings.Contains(warn, "chmod 600") {
		t.Fatalf("0644: warn %q, err %v", warn, err)
	}
}

func mustSet(t *testing.T, id string, secrets ...[]byte) *Set {
	t.Helper()
	s, err := FromSecrets(secrets, id, []string{"db1.example", "10.1.2.3", "0.0.0.0", ""})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMintNodeVerifies(t *testing.T) {
	s := mustSet(t, "n1", secretA)
	leaf := s.Cert.Leaf
	if _, err := s.verify(s.Cert.Certificate, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("server auth: %v", err)
	}
	if _, err := s.verify(s.Cert.Certificate, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("client auth: %v", err)
	}
	if id, ok := nodeIDOf(leaf); !ok || id != "n1" {
		t.Fatalf("node id %q %v", id, ok)
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "db1.example", "10.1.2.3"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("host %s: %v", h, err)
		}
	}
	if err := leaf.VerifyHostname("0.0.0.0"); err == nil {
		t.Error("the unspecified address is in the certificate")
	}
	// Another secret's set does not trust it.
	other := mustSet(t, "n1", secretB)
	if _, err := other.verify(s.Cert.Certificate, x509.ExtKeyUsageClientAuth); err == nil {
		t.Fatal("a certificate of another CA verified")
	}
	// A set trusting both does.
	both := mustSet(t, "n2", secretB, secretA)
	if _, err := both.verify(s.Cert.Certificate, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("rotation set: %v", err)
	}
	if n := bytes.Count(both.CAPEM(), []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Fatalf("CAPEM holds %d certificates", n)
	}
}

// handshake runs a TLS handshake between a server with srv and a client
// with cli over loopback TCP and returns the server's view.
func handshake(t *testing.T, srv, cli *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		st  tls.ConnectionState
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, srv)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil {
			// Let the client's Finished (and certificate) arrive.
			_, err = tc.Read(make([]byte, 1))
		}
		ch <- res{tc.ConnectionState(), err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, cli)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	cerr := tc.Handshake()
	if cerr == nil {
		_, cerr = tc.Write([]byte{1})
	}
	r := <-ch
	return r.st, r.err, cerr
}

func TestPeerIDOverTLS(t *testing.T) {
	n1, n2 := mustSet(t, "n1", secretA), mustSet(t, "n2", secretA)
	st, serr, cerr := handshake(t, n1.ServerConfig(), n2.PeerConfig("n1"))
	if serr != nil || cerr != nil {
		t.Fatalf("handshake: server %v, client %v", serr, cerr)
	}
	if id, ok := PeerID(st); !ok || id != "n2" {
		t.Fatalf("PeerID = %q %v, want n2", id, ok)
	}
	if st.Version != tls.VersionTLS13 {
		t.Fatalf("version %x", st.Version)
	}

	// Dialling n3 but reaching n1: the client refuses.
	if _, _, cerr := handshake(t, n1.ServerConfig(), n2.PeerConfig("n3")); !errors.Is(cerr, ErrNodeIdentity) {
		t.Fatalf("wrong server id: client err %v", cerr)
	}
	// A server of another cluster: the client refuses.
	other := mustSet(t, "n1", secretB)
	if _, _, cerr := handshake(t, other.ServerConfig(), n2.PeerConfig("n1")); cerr == nil {
		t.Fatal("client accepted another cluster's node")
	}
	// A client of another cluster: the server refuses its certificate.
	if _, serr, _ := handshake(t, n1.ServerConfig(), other.PeerConfig("n1")); serr == nil {
		t.Fatal("server accepted another cluster's certificate")
	}

	// No client certificate: the handshake succeeds, but it is no peer.
	pool := x509.NewCertPool()
	pool.AddCert(n1.CAs[0])
	st, serr, cerr = handshake(t, n1.ServerConfig(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if serr != nil || cerr != nil {
		t.Fatalf("anonymous client: server %v, client %v", serr, cerr)
	}
	if id, ok := PeerID(st); ok {
		t.Fatalf("anonymous client is peer %q", id)
	}

	// A client certificate of the cluster's CA, without the node SAN:
	// verified, but no peer.
	ca, key, _ := DeriveCA(secretA)
	cc, err := MintClient(ca, key, "alice")
	if err != nil {
		t.Fatal(err)
	}
	st, serr, cerr = handshake(t, n1.ServerConfig(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cc}})
	if serr != nil || cerr != nil {
		t.Fatalf("client cert: server %v, client %v", serr, cerr)
	}
	if len(st.VerifiedChains) == 0 {
		t.Fatal("client certificate not verified")
	}
	if id, ok := PeerID(st); ok {
		t.Fatalf("client certificate is peer %q", id)
	}
	// A client certificate is no server for a node dialling out.
	csrv := n1.ServerConfig()
	csrv.Certificates = []tls.Certificate{cc}
	if _, _, cerr := handshake(t, csrv, n2.PeerConfig("")); cerr == nil {
		t.Fatal("a node accepted a client certificate as a server")
	}
	// Unverified certificates never count: a state without verified chains.
	if _, ok := PeerID(tls.ConnectionState{PeerCertificates: []*x509.Certificate{n2.Cert.Leaf}}); ok {
		t.Fatal("PeerID trusted an unverified certificate")
	}
}

func writePEM(t *testing.T, path, typ string, ders ...[]byte) {
	t.Helper()
	var buf bytes.Buffer
	for _, d := range ders {
		_ = pem.Encode(&buf, &pem.Block{Type: typ, Bytes: d})
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	caA, keyA, _ := DeriveCA(secretA)
	caB, _, _ := DeriveCA(secretB)
	caFile := filepath.Join(dir, "ca.pem")
	writePEM(t, caFile, "CERTIFICATE", caB.Raw, caA.Raw) // several CAs
	write := func(name string, c tls.Certificate) (string, string) {
		cf, kf := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		writePEM(t, cf, "CERTIFICATE", c.Certificate...)
		der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, kf, "PRIVATE KEY", der)
		return cf, kf
	}
	node, err := MintNode(caA, keyA, "n7", nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := write("n7", node)
	s, err := LoadFiles(caFile, cf, kf, "n7")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.CAs) != 2 || s.NodeID != "n7" {
		t.Fatalf("set: %d CAs, id %q", len(s.CAs), s.NodeID)
	}
	if _, err := LoadFiles(caFile, cf, kf, "n8"); !errors.Is(err, ErrNodeIdentity) || !strings.Contains(err.Error(), "lambdadb://node/n8") {
		t.Fatalf("wrong id: %v", err)
	}
	cc, _ := MintClient(caA, keyA, "alice")
	cf2, kf2 := write("alice", cc)
	if _, err := LoadFiles(caFile, cf2, kf2, "alice"); !errors.Is(err, ErrNodeIdentity) {
		t.Fatalf("client certificate as node: %v", err)
	}
	onlyB := filepath.Join(dir, "b.pem")
	writePEM(t, onlyB, "CERTIFICATE", caB.Raw)
	if _, err := LoadFiles(onlyB, cf, kf, "n7"); err == nil {
		t.Fatal("a certificate of an untrusted CA loaded")
	}
	if _, err := LoadFiles(kf, cf, kf, "n7"); !errors.Is(err, ErrBadPEM) {
		t.Fatalf("CA file without certificates: %v", err)
	}
}

// TestRotationInterop: during a rotation a node with "new\nold" and one
// with "old" only accept each other both ways, and so do "new\nold" and
// "new"; a client that trusts only the old CA verifies the rotated node.
func TestRotationInterop(t *testing.T) {
	oldOnly := mustSet(t, "n1", secretA)
	rotating := mustSet(t, "n2", secretB, secretA)
	newOnly := mustSet(t, "n3", secretB)
	if len(rotating.Cert.Certificate) != 2 || len(newOnly.Cert.Certificate) != 1 {
		t.Fatalf("chains: rotating %d, new %d", len(rotating.Cert.Certificate), len(newOnly.Cert.Certificate))
	}
	pairs := []struct {
		srv, cli *Set
		ok       bool
	}{
		{oldOnly, rotating, true}, {rotating, oldOnly, true},
		{rotating, newOnly, true}, {newOnly, rotating, true},
		{oldOnly, newOnly, false}, {newOnly, oldOnly, false},
	}
	for _, p := range pairs {
		st, serr, cerr := handshake(t, p.srv.ServerConfig(), p.cli.PeerConfig(p.srv.NodeID))
		id, isPeer := PeerID(st)
		ok := serr == nil && cerr == nil && isPeer && id == p.cli.NodeID
		if ok != p.ok {
			t.Errorf("server %s (%d CAs), client %s (%d CAs): ok=%v, want %v (server %v, client %v, peer %q)",
				p.srv.NodeID, len(p.srv.CAs), p.cli.NodeID, len(p.cli.CAs), ok, p.ok, serr, cerr, id)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(oldOnly.CAs[0])
	if _, serr, cerr := handshake(t, rotating.ServerConfig(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}); serr != nil || cerr != nil {
		t.Fatalf("client trusting the old CA only: server %v, client %v", serr, cerr)
	}
}
