"""msconvert.convert"""
