"""palisade.agent"""
