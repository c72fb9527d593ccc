// Package scatter runs analytics across the whole key space: a leaf per
// shard filters and aggregates its records next to the data, and combines
// merge the leaves' partial results up a tree.
//
// This file set holds the built-in aggregates (aggregate.go): count, sum,
// min, max, avg and topk over a top-level field of JSON object values,
// optionally grouped by another field, as mergeable partial results.
//
// Partials are plain values; a Partial is not safe for concurrent use.
package scatter
