"""msconvert.datasets"""
