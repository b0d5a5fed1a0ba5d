print("kdct-native")
