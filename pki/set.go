package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// Set is a node's transport security material: the CAs it trusts and its
// own certificate. Build it with FromSecrets or LoadFiles.
type Set struct {
	// NodeID is the node the certificate names.
	NodeID string
	// CAs are the trusted CA certificates, the current one first.
	CAs []*x509.Certificate
	// Pool holds CAs.
	Pool *x509.CertPool
	// Cert is this node's certificate and key.
	Cert tls.Certificate
}

// FromSecrets derives a CA from each secret (the first is the current
// one, which signs the node's certificate; all are trusted) and mints node
// id's certificate for hosts (see MintNode). The certificate chain also
// holds the current CA cross-signed by each other one (CrossSign), so
// that nodes and clients which trust only an older CA accept it: a
// rotation never cuts a node off.
func FromSecrets(secrets [][]byte, id string, hosts []string) (*Set, error) {
	if len(secrets) == 0 {
		return nil, ErrNoSecret
	}
	s := &Set{NodeID: id, Pool: x509.NewCertPool()}
	for i, sec := range secrets {
		ca, key, err := DeriveCA(sec)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(s.CAs, ca.Equal) {
			continue // the same secret twice
		}
		s.CAs = append(s.CAs, ca)
		s.Pool.AddCert(ca)
		if i == 0 {
			if s.Cert, err = MintNode(ca, key, id, hosts); err != nil {
				return nil, err
			}
			continue
		}
		cross, err := CrossSign(s.CAs[0], ca, key)
		if err != nil {
			return nil, err
		}
		s.Cert.Certificate = append(s.Cert.Certificate, cross.Raw)
	}
	return s, nil
}

// LoadFiles builds node id's Set from PEM files: caFile holds one or more
// CA certificates (all trusted), certFile the node's certificate (and any
// intermediates after it), keyFile its key. The certificate must chain to
// one of the CAs and carry NodeURI(id).
func LoadFiles(caFile, certFile, keyFile, id string) (*Set, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: CA file: %w", err)
	}
	cas, err := parseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("%w (CA file %s)", err, caFile)
	}
	s := &Set{NodeID: id, Pool: x509.NewCertPool(), CAs: cas}
	for _, ca := range cas {
		s.Pool.AddCert(ca)
	}
	s.Cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: node certificate: %w", err)
	}
	if got, ok := nodeIDOf(s.Cert.Leaf); !ok || got != id {
		return nil, fmt.Errorf("%w: %s must carry the URI SAN %s (it has %v)", ErrNodeIdentity, certFile, NodeURI(id), s.Cert.Leaf.URIs)
	}
	if _, err := s.verify(s.Cert.Certificate, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, fmt.Errorf("pki: node certificate %s: %w", certFile, err)
	}
	if _, err := s.verify(s.Cert.Certificate, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, fmt.Errorf("pki: node certificate %s must allow client auth too: %w", certFile, err)
	}
	return s, nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadPEM, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE block", ErrBadPEM)
	}
	return out, nil
}

// CAPEM returns the trusted CA certificates in PEM, the current one first:
// what clients need to verify the nodes (serve writes it to <data>/ca.pem).
func (s *Set) CAPEM() []byte {
	var buf bytes.Buffer
	for _, ca := range s.CAs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	}
	return buf.Bytes()
}

// verify checks that chain (DER, leaf first) chains to a trusted CA for
// usage, and returns the leaf.
func (s *Set) verify(chain [][]byte, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("pki: no certificate")
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("pki: parse certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots: s.Pool, Intermediates: inter, CurrentTime: time.Now(),
		KeyUsages: []x509.ExtKeyUsage{usage},
	}); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return certs[0], nil
}

// ServerConfig is the TLS configuration of the node's listener: TLS 1.3
// only; a client certificate is optional, verified against the trusted CAs
// when given (PeerID then tells whether it is a node's).
func (s *Set) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.Cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    s.Pool,
		NextProtos:   []string{"http/1.1"},
	}
}

// PeerConfig is the TLS configuration for dialling node peer: it presents
// this node's certificate and accepts only a server certificate that
// chains to a trusted CA and names node peer (any node of the cluster when
// peer is ""). Host names play no part.
func (s *Set) PeerConfig(peer string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.Cert},
		// Verified by VerifyConnection, against node identities rather
		// than host names.
		InsecureSkipVerify: true,
		VerifyConnection: func(st tls.ConnectionState) error {
			leaf, err := s.verify(rawChain(st.PeerCertificates), x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			id, ok := nodeIDOf(leaf)
			if !ok {
				return fmt.Errorf("%w: the server's certificate is not a node's", ErrNodeIdentity)
			}
			if peer != "" && id != peer {
				return fmt.Errorf("%w: dialled node %q, the server is node %q", ErrNodeIdentity, peer, id)
			}
			return nil
		},
		NextProtos: []string{"http/1.1"},
	}
}

func rawChain(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// PeerID returns the node id a connection's peer proved: the id in the
// URI SAN of its leaf certificate, provided the certificate was verified
// against the trusted CAs (state.VerifiedChains, filled in by a server
// configured with ServerConfig). ok is false for a peer without a
// certificate, or with one that does not name a node.
func PeerID(state tls.ConnectionState) (id string, ok bool) {
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return "", false
	}
	return nodeIDOf(state.VerifiedChains[0][0])
}
