"""palisade.kafka"""
