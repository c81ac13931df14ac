"""palisade.identity"""
