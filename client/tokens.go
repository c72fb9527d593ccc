package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// IssuedToken is a token just created: Token is shown only this once.
type IssuedToken struct {
	Token     string     `json:"token"`
	Accessor  string     `json:"accessor"`
	Namespace string     `json:"namespace"`
	Scopes    []string   `json:"scopes"`
	Expires   *time.Time `json:"expires"`
}

// TokenInfo is a token as lists show it (no secret).
type TokenInfo struct {
	Accessor  string     `json:"accessor"`
	Namespace string     `json:"namespace"`
	Scopes    []string   `json:"scopes"`
	Created   time.Time  `json:"created"`
	Expires   *time.Time `json:"expires"`
	Expired   bool       `json:"expired"`
}

// Bootstrap asks a secure-mode cluster for its first admin token. It
// succeeds once per cluster; afterwards it fails with status 409, code
// "already_bootstrapped".
func (c *Client) Bootstrap(ctx context.Context) (IssuedToken, error) {
	var out IssuedToken
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/auth/bootstrap", nil, nil, nil, &out)
	return out, err
}

// CreateToken issues a token for namespace ns (the admin's own when "")
// with scopes such as "kv:read:orders/", "kv:write:*", "query",
// "fn:invoke"; ttl 0 means it never expires. It needs an admin token.
func (c *Client) CreateToken(ctx context.Context, ns string, scopes []string, ttl time.Duration) (IssuedToken, error) {
	body, err := json.Marshal(map[string]any{"namespace": ns, "scopes": scopes, "ttl_s": int64(ttl / time.Second)})
	if err != nil {
		return IssuedToken{}, err
	}
	var out IssuedToken
	_, err = c.doJSON(ctx, http.MethodPost, "/v1/tokens", nil, body, nil, &out)
	return out, err
}

// Tokens lists every token, without secrets. It needs an admin token.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var out struct {
		Tokens []TokenInfo `json:"tokens"`
	}
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/tokens", nil, nil, nil, &out)
	return out.Tokens, err
}

// RevokeToken revokes the token with this accessor on every node; it
// returns the nodes that could not be told at once (they stop accepting
// it within the node's cache time, 30 s by default, once they can read
// the token records).
func (c *Client) RevokeToken(ctx context.Context, accessor string) (unreached []string, err error) {
	var out struct {
		Unreached []string `json:"unreached_nodes"`
	}
	_, err = c.doJSON(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(accessor), nil, nil, nil, &out)
	return out.Unreached, err
}
