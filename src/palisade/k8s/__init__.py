"""palisade.k8s"""
