// Package pki holds lambdadb's transport security material: the cluster's
// certificate authorities, this node's certificate, and the TLS
// configurations built from them.
//
// A cluster in secure mode trusts one or more CAs. Either they are derived
// from a cluster secret (DeriveCA: HKDF-SHA256 over the secret gives an
// Ed25519 seed; the self-signed CA certificate has fixed fields, so every
// node holding the secret derives the identical certificate) and each node
// mints its own certificate at start (MintNode), or the operator supplies
// PEM files from their own PKI (LoadFiles).
//
// A node certificate names its node with the URI SAN lambdadb://node/<id>
// (NodeURI). Only a certificate that carries it and chains to a trusted CA
// may speak for a node (PeerID); any other certificate the CA signed (an
// HTTP client's, say) is at most a client.
package pki
