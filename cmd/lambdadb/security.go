package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"lambdadb/pki"
)

// securitySet returns the node's transport security material: derived
// from --cluster-secret-file, loaded from --ca-file, --cert-file and
// --key-file, or nil for plain HTTP — which serve allows on a loopback
// address only, unless --insecure.
func securitySet(o serveOptions, log *slog.Logger) (*pki.Set, error) {
	switch {
	case o.secretFile != "":
		secrets, warning, err := pki.ReadSecretFile(o.secretFile)
		if err != nil {
			return nil, fmt.Errorf("serve: --cluster-secret-file: %w", err)
		}
		if warning != "" {
			log.Warn(warning)
		}
		set, err := pki.FromSecrets(secrets, o.id, certHosts(o.addr))
		if err != nil {
			return nil, fmt.Errorf("serve: --cluster-secret-file: %w", err)
		}
		log.Info("secure mode", "ca", set.CAs[0].Subject.CommonName, "trusted_cas", len(set.CAs))
		return set, nil
	case o.caFile != "":
		set, err := pki.LoadFiles(o.caFile, o.certFile, o.keyFile, o.id)
		if err != nil {
			return nil, fmt.Errorf("serve: %w", err)
		}
		log.Info("secure mode", "cert", o.certFile, "trusted_cas", len(set.CAs))
		return set, nil
	}
	if !loopbackOnly(o.addr) {
		if !o.insecure {
			return nil, fmt.Errorf("serve: refusing to serve plain HTTP on %s, which is not a loopback address: "+
				"give --cluster-secret-file FILE (or --ca-file, --cert-file and --key-file) to serve TLS, "+
				"or --insecure to serve it unprotected anyway", o.addr)
		}
		log.Warn("INSECURE: serving plain HTTP on a non-loopback address; anyone who can reach " + o.addr +
			" can read and write all data and impersonate cluster nodes (--insecure)")
	}
	return nil, nil
}

// loopbackOnly reports whether the host of addr is a loopback address,
// or a name that resolves only to loopback addresses.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false // "" listens on every interface
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return false
		}
	}
	return true
}

// certHosts are the names the node's certificate carries besides
// localhost and the loopback addresses: the host of its address and the
// machine's host name.
func certHosts(addr string) []string {
	var hosts []string
	if host, _, err := net.SplitHostPort(addr); err == nil && host != "" {
		hosts = append(hosts, host)
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return hosts
}

// writeCAFile writes the CA certificates clients should trust to
// <data>/ca.pem (for curl --cacert, lambdadb --cacert).
func writeCAFile(data string, set *pki.Set) error {
	if err := os.MkdirAll(data, 0o755); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	path := filepath.Join(data, "ca.pem")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, set.CAPEM(), 0o644); err != nil {
		return fmt.Errorf("serve: write CA certificate: %w", err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("serve: write CA certificate: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("serve: write CA certificate: %w", err)
	}
	return nil
}

// peerClient is the HTTP client of requests to other nodes' API: in
// secure mode it presents this node's certificate and accepts any node
// of the cluster.
func peerClient(set *pki.Set) *http.Client {
	if set == nil {
		return nil // the server's default
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = set.PeerConfig("")
	return &http.Client{Transport: tr}
}

func peerScheme(set *pki.Set) string {
	if set == nil {
		return "http"
	}
	return "https"
}
