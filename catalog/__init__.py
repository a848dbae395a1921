"""msconvert.catalog"""
