"""palisade.datapath"""
