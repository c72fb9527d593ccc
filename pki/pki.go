package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// MinSecretBytes is the shortest cluster secret accepted (after trimming
// white space).
const MinSecretBytes = 32

// NodeURIScheme and NodeURIHost form a node certificate's identity:
// lambdadb://node/<id>.
const (
	NodeURIScheme = "lambdadb"
	NodeURIHost   = "node"
)

// The derivation of a CA from a secret. Changing any of these changes
// every cluster's CA: never do.
const (
	hkdfSalt = "lambdadb cluster CA v1"
	hkdfInfo = "ed25519 seed"
)

var (
	caNotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	caNotAfter  = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Errors, wrapped with detail by the functions that return them.
var (
	// ErrShortSecret is a cluster secret shorter than MinSecretBytes.
	ErrShortSecret = errors.New("pki: cluster secret too short")
	// ErrNoSecret is a secret file without any secret in it.
	ErrNoSecret = errors.New("pki: no cluster secret")
	// ErrNodeIdentity is a node certificate that does not name the node.
	ErrNodeIdentity = errors.New("pki: certificate does not carry the node's identity")
	// ErrBadPEM is a PEM file that holds no usable certificate.
	ErrBadPEM = errors.New("pki: bad PEM")
)

// NodeURI returns the URI SAN of node id's certificate.
func NodeURI(id string) *url.URL {
	return &url.URL{Scheme: NodeURIScheme, Host: NodeURIHost, Path: "/" + id}
}

// nodeIDOf returns the node id cert's URI SAN names, if it has one.
func nodeIDOf(cert *x509.Certificate) (string, bool) {
	for _, u := range cert.URIs {
		if u.Scheme == NodeURIScheme && u.Host == NodeURIHost && u.User == nil &&
			u.RawQuery == "" && u.Fragment == "" && strings.HasPrefix(u.Path, "/") && len(u.Path) > 1 {
			return u.Path[1:], true
		}
	}
	return "", false
}

// DeriveCA derives the cluster CA from secret: its certificate and key are
// the same for every call with the same secret (which is trimmed of
// surrounding white space first) and differ for every other secret.
func DeriveCA(secret []byte) (*x509.Certificate, ed25519.PrivateKey, error) {
	secret = bytes.TrimSpace(secret)
	if len(secret) < MinSecretBytes {
		return nil, nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrShortSecret, len(secret), MinSecretBytes)
	}
	seed, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), hkdfInfo, ed25519.SeedSize)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: derive CA key: %w", err)
	}
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	fp := sha256.Sum256(pub)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject: pkix.Name{
			Organization: []string{"lambdadb"},
			// The key's fingerprint tells the CAs of two secrets apart
			// (during a rotation both are trusted).
			CommonName: "lambdadb cluster CA " + hex.EncodeToString(fp[:8]),
		},
		NotBefore:             caNotBefore,
		NotAfter:              caNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// One intermediate: the cross-certificate of a newer CA during a
		// rotation (CrossSign).
		MaxPathLen:   1,
		SubjectKeyId: fp[:20],
	}
	// Ed25519 signatures are deterministic: so are the certificate's bytes.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return cert, key, nil
}

// CrossSign certifies the CA ca (its subject and key) by the CA issuer
// with issuerKey. A node whose certificate ca signed sends the result
// after its certificate, so that peers and clients that trust only issuer
// (not yet ca) verify it too: during a rotation the new CA is thus
// vouched for by the old. The result is deterministic, like DeriveCA's.
func CrossSign(ca *x509.Certificate, issuer *x509.Certificate, issuerKey crypto.Signer) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               ca.Subject,
		NotBefore:             ca.NotBefore,
		NotAfter:              ca.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          ca.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, ca.PublicKey, issuerKey)
	if err != nil {
		return nil, fmt.Errorf("pki: cross-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse cross-certificate: %w", err)
	}
	return cert, nil
}

// MintNode issues a certificate for node id, signed by ca with caKey, for
// a fresh ECDSA P-256 key. It names the node (NodeURI) and hosts (DNS
// names or IP addresses; empty entries and unspecified addresses are
// skipped), and always localhost, 127.0.0.1 and ::1 too, so that clients
// on the node's machine can verify it by address. It may serve and
// authenticate as a client.
func MintNode(ca *x509.Certificate, caKey crypto.Signer, id string, hosts []string) (tls.Certificate, error) {
	if id == "" {
		return tls.Certificate{}, fmt.Errorf("%w: empty node id", ErrNodeIdentity)
	}
	tmpl, key, err := leafTemplate("lambdadb node " + id)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl.URIs = []*url.URL{NodeURI(id)}
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() && !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	return sign(tmpl, key, ca, caKey)
}

// MintClient issues a client certificate named name, signed by ca: it
// authenticates an HTTP client to the nodes, and can never act as a node.
func MintClient(ca *x509.Certificate, caKey crypto.Signer, name string) (tls.Certificate, error) {
	tmpl, key, err := leafTemplate(name)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return sign(tmpl, key, ca, caKey)
}

func leafTemplate(cn string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("pki: serial: %w", err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"lambdadb"}, CommonName: cn},
		NotBefore:    now.Add(-time.Hour), // tolerate clocks a little behind
		// The key lives only in this process's memory.
		NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}, key, nil
}

func sign(tmpl *x509.Certificate, key *ecdsa.PrivateKey, ca *x509.Certificate, caKey crypto.Signer) (tls.Certificate, error) {
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: sign certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: parse certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ParseSecrets splits a secret file's contents into its secrets: one per
// non-empty line, trimmed; the first is the current one. Each must be at
// least MinSecretBytes long.
func ParseSecrets(b []byte) ([][]byte, error) {
	var out [][]byte
	for i, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(line) < MinSecretBytes {
			return nil, fmt.Errorf("%w: line %d has %d bytes, want at least %d", ErrShortSecret, i+1, len(line), MinSecretBytes)
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: the file is empty", ErrNoSecret)
	}
	return out, nil
}

// ReadSecretFile reads and parses the secret file at path. warning is
// non-empty when the file's permissions let others than its owner read
// it (the caller logs it).
func ReadSecretFile(path string) (secrets [][]byte, warning string, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, "", fmt.Errorf("pki: cluster secret file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		warning = fmt.Sprintf("cluster secret file %s has mode %v: anyone who can read it can impersonate a node (chmod 600 it)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("pki: cluster secret file: %w", err)
	}
	secrets, err = ParseSecrets(b)
	if err != nil {
		return nil, "", fmt.Errorf("%w (file %s)", err, path)
	}
	return secrets, warning, nil
}
