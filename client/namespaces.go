package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
)

// Quota is a namespace's limits; 0 is unlimited. Rates and concurrency
// are enforced on each node; a request over one gets status 429, code
// "quota_exceeded", with Retry-After.
type Quota struct {
	OpsPerS         int64 `json:"ops_per_s"`         // data requests a second (kv, feed, query)
	InvocationsPerS int64 `json:"invocations_per_s"` // function invocations a second
	Concurrency     int64 `json:"concurrency"`       // invocations running at once
	StoredBytes     int64 `json:"stored_bytes"`      // bytes of keys and values: writes refused at or above it
}

// NamespaceUsage is what a namespace uses.
type NamespaceUsage struct {
	StoredBytes   int64 `json:"stored_bytes"`    // its keys and values (one replica's worth)
	RunningOnNode int64 `json:"running_on_node"` // its invocations running on the answering node
}

// NamespaceInfo is a namespace's quota and usage.
type NamespaceInfo struct {
	Namespace string         `json:"namespace"`
	Quota     Quota          `json:"quota"`
	Usage     NamespaceUsage `json:"usage"`
}

// SetQuota sets namespace ns's quota (all zero removes it) and returns
// the namespace as stored. It needs an admin token; other nodes apply it
// within a few seconds (their refresh interval).
func (c *Client) SetQuota(ctx context.Context, ns string, q Quota) (NamespaceInfo, error) {
	body, err := json.Marshal(q)
	if err != nil {
		return NamespaceInfo{}, err
	}
	var out NamespaceInfo
	_, err = c.doJSON(ctx, http.MethodPut, "/v1/namespaces/"+url.PathEscape(ns)+"/quota", nil, body, nil, &out)
	return out, err
}

// Quota returns namespace ns's quota and usage. It needs an admin token.
func (c *Client) Quota(ctx context.Context, ns string) (NamespaceInfo, error) {
	var out NamespaceInfo
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/namespaces/"+url.PathEscape(ns)+"/quota", nil, nil, nil, &out)
	return out, err
}

// Namespaces lists the namespaces that have a quota or stored data, in
// name order. It needs an admin token.
func (c *Client) Namespaces(ctx context.Context) ([]NamespaceInfo, error) {
	var out struct {
		Namespaces []NamespaceInfo `json:"namespaces"`
	}
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/namespaces", nil, nil, nil, &out)
	return out.Namespaces, err
}
