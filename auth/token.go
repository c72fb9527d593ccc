package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"strings"
)

// Errors. The HTTP layer maps ErrUnauthenticated to 401, ErrForbidden to
// 403, ErrBootstrapped to 409 and ErrInvalid to 400.
var (
	ErrUnauthenticated = errors.New("auth: unauthenticated")
	ErrForbidden       = errors.New("auth: forbidden")
	ErrBootstrapped    = errors.New("auth: the cluster is already bootstrapped")
	ErrInvalid         = errors.New("auth: invalid request")
	ErrNotFound        = errors.New("auth: no such token")
)

const (
	tokenPrefix = "ldb_"
	accessorLen = 16 // hex digits
	secretLen   = 43 // base64url of 32 bytes
	checkLen    = 8  // hex CRC-32
	// TokenLen is the length of every token.
	TokenLen = len(tokenPrefix) + accessorLen + 1 + secretLen + checkLen
)

// Token is a token's text. Its String and LogValue show only its
// accessor.
type Token string

// String returns the token's accessor with the secret redacted.
func (t Token) String() string {
	if acc, err := ParseToken(string(t)); err == nil {
		return tokenPrefix + acc + "_REDACTED"
	}
	return "REDACTED"
}

// LogValue keeps the secret out of every log line.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// GoString is String, so %#v does not print the secret either.
func (t Token) GoString() string { return t.String() }

// Format prints String whatever the verb, so no formatting of a Token
// shows its secret; use string(t) to get the text.
func (t Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(t.String())) }

// NewToken returns a fresh token and its accessor.
func NewToken() (Token, string, error) {
	var a [accessorLen / 2]byte
	var s [32]byte
	if _, err := rand.Read(a[:]); err != nil {
		return "", "", fmt.Errorf("auth: random: %w", err)
	}
	if _, err := rand.Read(s[:]); err != nil {
		return "", "", fmt.Errorf("auth: random: %w", err)
	}
	acc := hex.EncodeToString(a[:])
	body := tokenPrefix + acc + "_" + base64.RawURLEncoding.EncodeToString(s[:])
	return Token(body + checksum(body)), acc, nil
}

// checksum is the CRC-32 of a token's body in 8 lowercase hex digits.
func checksum(body string) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc32.ChecksumIEEE([]byte(body)))
	return hex.EncodeToString(b[:])
}

// ParseToken checks a token's form and checksum and returns its
// accessor. The error wraps ErrUnauthenticated and never holds the token.
func ParseToken(t string) (accessor string, err error) {
	if len(t) != TokenLen || !strings.HasPrefix(t, tokenPrefix) || t[len(tokenPrefix)+accessorLen] != '_' {
		return "", fmt.Errorf("%w: not a lambdadb token", ErrUnauthenticated)
	}
	body, check := t[:len(t)-checkLen], t[len(t)-checkLen:]
	if checksum(body) != check {
		return "", fmt.Errorf("%w: token checksum does not match (mistyped or truncated?)", ErrUnauthenticated)
	}
	acc := t[len(tokenPrefix) : len(tokenPrefix)+accessorLen]
	if !validAccessor(acc) {
		return "", fmt.Errorf("%w: not a lambdadb token", ErrUnauthenticated)
	}
	return acc, nil
}

func validAccessor(a string) bool {
	if len(a) != accessorLen {
		return false
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// hashToken is what the store keeps of a token.
func hashToken(t string) []byte {
	h := sha256.Sum256([]byte(t))
	return h[:]
}
