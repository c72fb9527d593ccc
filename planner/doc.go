// Package planner decides where shard replicas and leaders should go: given
// the nodes (with their states), each shard's replicas and leader, and the
// moves already in flight, Compute returns the next moves and leadership
// transfers that restore the replication factor, drain decommissioning and
// removed nodes, and spread replicas and leaders to within one of the mean.
//
// It is a pure function, so every step of elastic membership can be
// planned, tested and explained without a cluster: a move in flight counts
// as done (planning again while it runs proposes nothing new for it, so
// replicas never move back and forth), a shard never has fewer than R
// replicas planned on nodes that can serve it, and a balanced placement
// plans nothing.
package planner
