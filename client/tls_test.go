package client_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"lambdadb/client"
	"lambdadb/pki"
)

// TestWithCACert: an https:// client that trusts the cluster's CA talks
// to a node serving a certificate of it; without the CA it refuses.
func TestWithCACert(t *testing.T) {
	set, err := pki.FromSecrets([][]byte{[]byte("client-test-cluster-secret-0123456789abc")}, "n1", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok","node":"n1"}`)
	}))
	srv.TLS = set.ServerConfig()
	srv.StartTLS()
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Fatalf("URL %s", srv.URL)
	}

	cl, err := client.New(srv.URL, client.WithCACert(set.CAPEM()))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := cl.Health(t.Context()); err != nil || h.Node != "n1" {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	// Also by name: the node's certificate names localhost.
	cl, err = client.New(strings.Replace(srv.URL, "127.0.0.1", "localhost", 1), client.WithCACert(set.CAPEM()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Health(t.Context()); err != nil {
		t.Fatalf("by name: %v", err)
	}

	plain, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Health(t.Context()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: %v", err)
	}
	other, _ := pki.FromSecrets([][]byte{[]byte("another-client-test-secret-0123456789abc")}, "n1", nil)
	wrong, err := client.New(srv.URL, client.WithCACert(other.CAPEM()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Health(t.Context()); err == nil {
		t.Fatal("a client trusting another CA accepted the node")
	}
	if _, err := client.New(srv.URL, client.WithCACert([]byte("not pem"))); err == nil {
		t.Fatal("WithCACert accepted no certificate")
	}

	// WithTLSConfig, with a client certificate, over a given HTTP client.
	pool := x509.NewCertPool()
	pool.AddCert(set.CAs[0])
	cl, err = client.New(srv.URL, client.WithHTTPClient(&http.Client{}),
		client.WithTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{set.Cert}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Health(t.Context()); err != nil {
		t.Fatalf("WithTLSConfig: %v", err)
	}
}
